"""The SOAP agencies (tax office, social security), through zeep and as raw envelopes."""

from __future__ import annotations

import time
import uuid

import pytest
import requests
import zeep
from lxml import etree
from zeep.exceptions import DTDForbidden, EntitiesForbidden, Fault, TransportError
from zeep.wsse.username import UsernameToken

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
XROAD = "http://x-road.eu/xsd/xroad.xsd"
ID = "http://x-road.eu/xsd/identifiers"
TAX_TNS = "urn:satupintu:sandbox:tax"

XROAD_HEADER = f"""
  <soapenv:Header xmlns:xrd="{XROAD}" xmlns:id="{ID}">
    <xrd:client id:objectType="SUBSYSTEM"><id:xRoadInstance>ID</id:xRoadInstance>
      <id:memberClass>GOV</id:memberClass><id:memberCode>001</id:memberCode>
      <id:subsystemCode>satupintu</id:subsystemCode></xrd:client>
    <xrd:service id:objectType="SERVICE"><id:xRoadInstance>ID</id:xRoadInstance>
      <id:memberClass>GOV</id:memberClass><id:memberCode>DJP</id:memberCode>
      <id:serviceCode>RegisterTaxpayer</id:serviceCode></xrd:service>
    <xrd:id>{{message_id}}</xrd:id>
    <xrd:userId>ID-officer-7</xrd:userId>
    <xrd:issue>case-42</xrd:issue>
    <xrd:protocolVersion>4.0</xrd:protocolVersion>
  </soapenv:Header>"""


def key() -> str:
    return str(uuid.uuid4())


def client(sandbox, agency: str, **kwargs) -> zeep.Client:
    return zeep.Client(sandbox.url(agency, "/?wsdl"), **kwargs)


def register_envelope(
    request_id: str, header: str = "", name: str = "PT Maju Jaya"
) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:tax="{TAX_TNS}">{header}
  <soapenv:Body><tax:RegisterTaxpayer>
    <tax:request_id>{request_id}</tax:request_id><tax:company_number>AHU-0000000001</tax:company_number>
    <tax:nik>3171234567890001</tax:nik><tax:name>{name}</tax:name><tax:address>Jl. A</tax:address>
  </tax:RegisterTaxpayer></soapenv:Body></soapenv:Envelope>"""


def post_raw(sandbox, envelope: str) -> requests.Response:
    return requests.post(
        sandbox.url("tax-office", "/"),
        data=envelope.encode(),
        headers={
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": '"RegisterTaxpayer"',
        },
        timeout=5,
    )


def register(tax: zeep.Client, request_id: str, name: str = "PT Maju Jaya"):
    return tax.service.RegisterTaxpayer(
        request_id=request_id,
        company_number="AHU-0000000001",
        nik="3171234567890001",
        name=name,
        address="Jl. Merdeka 1",
    )


def enrol(social: zeep.Client, request_id: str, name: str = "PT Maju Jaya"):
    return social.service.EnrolEmployer(
        request_id=request_id,
        company_number="AHU-0000000001",
        npwp="0" * 15,
        name=name,
        employees=12,
    )


# -- tax office ------------------------------------------------------------------------


def test_tax_office_registers_once_and_looks_up_by_request_id(sandbox):
    tax = client(sandbox, "tax-office")
    request_id = key()
    first = register(tax, request_id)
    again = register(tax, request_id)
    assert first.status_code == 50 and len(first.npwp) == 15 and first.npwp.isdigit()
    assert (again.npwp, again.status_code) == (first.npwp, first.status_code)
    assert tax.service.LookupTaxpayer(request_id=request_id).npwp == first.npwp
    stats = sandbox.stats("tax-office")
    assert (stats["requests"], stats["unique_request_ids"], stats["duplicates"]) == (
        2,
        1,
        1,
    )


def test_tax_office_rejects_by_rule_with_status_90(sandbox):
    result = register(client(sandbox, "tax-office"), key(), name="PT REJECT")
    assert result.status_code == 90 and "name" in result.reason and result.npwp is None


def test_tax_office_faults_on_missing_fields_and_unknown_lookup(sandbox):
    tax = client(sandbox, "tax-office")
    with pytest.raises(Fault) as missing:
        tax.service.RegisterTaxpayer(request_id=key())
    assert "Client" in missing.value.code
    assert missing.value.message == "request_id and company_number are required"
    with pytest.raises(Fault) as unknown:
        tax.service.LookupTaxpayer(request_id=key())
    assert unknown.value.code.endswith("Client.NotFound")


def test_tax_office_injected_failure_is_a_server_fault_and_retry_files(sandbox):
    tax = client(sandbox, "tax-office")
    request_id = key()
    sandbox.faults("tax-office", failure_rate=1.0)
    with pytest.raises(Fault) as failed:
        register(tax, request_id)
    assert (
        failed.value.code.endswith("Server")
        and failed.value.message == "temporarily unavailable"
    )
    assert post_raw(sandbox, register_envelope(key())).status_code == 503
    sandbox.faults("tax-office", failure_rate=0)
    assert register(tax, request_id).status_code == 50
    stats = sandbox.stats("tax-office")
    assert stats["duplicates"] == 0 and stats["retries_after_failure"] == 1


def test_tax_office_outage_is_a_server_fault(sandbox):
    tax = client(sandbox, "tax-office")
    sandbox.faults("tax-office", outage_seconds=30)
    with pytest.raises(Fault) as down:
        register(tax, key())
    assert down.value.code.endswith("Server")


@pytest.mark.parametrize(
    "use_digest", [False, True], ids=["PasswordText", "PasswordDigest"]
)
def test_wsse_username_token_is_checked(sandbox, use_digest):
    sandbox.faults(
        "tax-office", auth={"type": "wsse", "username": "djp", "password": "rahasia"}
    )
    good = client(
        sandbox,
        "tax-office",
        wsse=UsernameToken("djp", "rahasia", use_digest=use_digest),
    )
    assert register(good, key()).status_code == 50
    for wsse in (UsernameToken("djp", "salah", use_digest=use_digest), None):
        with pytest.raises(Fault) as refused:
            register(client(sandbox, "tax-office", wsse=wsse), key())
        assert refused.value.code.endswith("Client")
        assert refused.value.message == "authentication failed"


def test_basic_auth_guards_the_soap_endpoint_too(sandbox):
    sandbox.faults(
        "tax-office", auth={"type": "basic", "username": "u", "password": "p"}
    )
    session = requests.Session()
    session.auth = ("u", "p")
    tax = zeep.Client(
        sandbox.url("tax-office", "/?wsdl"),
        transport=zeep.transports.Transport(session=session),
    )
    assert register(tax, key()).status_code == 50
    assert post_raw(sandbox, register_envelope(key())).status_code == 500


def test_xroad_headers_are_echoed_back_unchanged(sandbox):
    message_id = key()
    sent = register_envelope(key(), XROAD_HEADER.replace("{message_id}", message_id))
    answer = post_raw(sandbox, sent)
    assert answer.status_code == 200
    root = etree.fromstring(answer.content)
    echoed = root.find(f"{{{SOAP_ENV}}}Header")
    names = [
        etree.QName(e).localname for e in echoed if etree.QName(e).namespace == XROAD
    ]
    assert names == ["client", "service", "id", "userId", "issue", "protocolVersion"]
    assert echoed.findtext(f"{{{XROAD}}}id") == message_id
    original = etree.fromstring(sent.encode()).find(f"{{{SOAP_ENV}}}Header")
    for sent_el, got_el in zip(original, echoed):
        assert _exclusive_c14n(sent_el) == _exclusive_c14n(got_el)
    assert root.find(f".//{{{TAX_TNS}}}npwp") is not None
    assert message_id in sandbox.requests("tax-office", 1)[0]["body"]


def test_plain_requests_get_no_xroad_header(sandbox):
    answer = post_raw(sandbox, register_envelope(key()))
    assert answer.status_code == 200 and XROAD.encode() not in answer.content


def test_bad_answer_malformed_is_not_well_formed_xml(sandbox):
    sandbox.faults("tax-office", bad_answer="malformed")
    answer = post_raw(sandbox, register_envelope(key()))
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(answer.content)


def test_bad_answer_xxe_declares_an_external_entity(sandbox):
    sandbox.faults("tax-office", bad_answer="xxe")
    answer = post_raw(sandbox, register_envelope(key())).content
    assert b"<!DOCTYPE" in answer and b'SYSTEM "file:///etc/passwd"' in answer
    assert b"&xxe;" in answer
    safe = etree.XMLParser(resolve_entities=False, no_network=True)
    npwp = etree.fromstring(answer, safe).find(f".//{{{TAX_TNS}}}npwp")
    assert "root:" not in etree.tostring(npwp).decode()
    with pytest.raises((DTDForbidden, EntitiesForbidden)):  # zeep's safe defaults
        register(client(sandbox, "tax-office"), key())


def test_bad_answer_billion_laughs_nests_entities(sandbox):
    sandbox.faults("tax-office", bad_answer="billion_laughs")
    answer = post_raw(sandbox, register_envelope(key())).content
    assert b'<!ENTITY lol9 "&lol8;&lol8;' in answer and b"&lol9;" in answer
    # zeep refuses the entities, or libxml2's amplification guard does
    with pytest.raises((DTDForbidden, EntitiesForbidden, TransportError)):
        register(client(sandbox, "tax-office"), key())


def test_bad_answer_wrong_shape_lacks_npwp(sandbox):
    sandbox.faults("tax-office", bad_answer="wrong_shape")
    answer = post_raw(sandbox, register_envelope(key()))
    root = etree.fromstring(answer.content)
    assert root.find(f".//{{{TAX_TNS}}}RegisterTaxpayerResult") is not None
    assert root.find(f".//{{{TAX_TNS}}}npwp") is None
    assert root.find(f".//{{{TAX_TNS}}}status_code") is not None


def test_requests_with_a_dtd_are_refused(sandbox):
    envelope = register_envelope(key()).replace(
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>',
    )
    answer = post_raw(sandbox, envelope)
    assert answer.status_code == 500 and b"DTDs are not accepted" in answer.content


# -- social security --------------------------------------------------------------------


def test_social_security_enrolment_is_decided_after_the_delay(sandbox):
    social = client(sandbox, "social-security")
    request_id = key()
    received = enrol(social, request_id)
    assert received.status_code == 41 and received.ticket.startswith("TKT-")
    assert enrol(social, request_id).ticket == received.ticket
    assert social.service.GetEnrolmentStatus(ticket=received.ticket).status_code == 41
    time.sleep(sandbox.decision_delay + 0.1)
    decided = social.service.GetEnrolmentStatus(ticket=received.ticket)
    assert decided.status_code == 50 and decided.bpjs_number
    looked_up = social.service.LookupEnrolment(request_id=request_id)
    assert (looked_up.ticket, looked_up.status_code) == (received.ticket, 50)
    stats = sandbox.stats("social-security")
    assert stats["duplicates"] == 1 and stats["by_operation"]["GetEnrolmentStatus"] == 2


def test_social_security_rejects_by_rule_after_the_delay(sandbox):
    social = client(sandbox, "social-security")
    ticket = enrol(social, key(), name="PT REJECT").ticket
    time.sleep(sandbox.decision_delay + 0.1)
    decided = social.service.GetEnrolmentStatus(ticket=ticket)
    assert (
        decided.status_code == 90
        and "name" in decided.reason
        and decided.bpjs_number is None
    )


def test_social_security_cancel_before_and_after_decision(sandbox):
    social = client(sandbox, "social-security")
    ticket = enrol(social, key()).ticket
    assert social.service.CancelEnrolment(ticket=ticket).status_code == 80
    time.sleep(sandbox.decision_delay + 0.1)
    assert social.service.GetEnrolmentStatus(ticket=ticket).status_code == 80
    decided = enrol(social, key()).ticket
    time.sleep(sandbox.decision_delay + 0.1)
    with pytest.raises(Fault) as refused:
        social.service.CancelEnrolment(ticket=decided)
    assert refused.value.message == "already decided"


def test_social_security_unknown_ticket_and_lookup_are_client_faults(sandbox):
    social = client(sandbox, "social-security")
    with pytest.raises(Fault) as unknown:
        social.service.GetEnrolmentStatus(ticket="TKT-000")
    assert "Client" in unknown.value.code
    with pytest.raises(Fault) as missing:
        social.service.LookupEnrolment(request_id=key())
    assert unknown.value.code.endswith("NotFound") and missing.value.code.endswith(
        "Client.NotFound"
    )


def test_social_security_wrong_shape_lacks_ticket(sandbox):
    sandbox.faults("social-security", bad_answer="wrong_shape")
    assert enrol(client(sandbox, "social-security"), key()).ticket is None


def _exclusive_c14n(element) -> bytes:
    return etree.tostring(element, method="c14n", exclusive=True)
