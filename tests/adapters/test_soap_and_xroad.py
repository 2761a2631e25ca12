"""SOAP and X-Road behaviour that needs a hand-made agency: X-Road faults and echoes,
SOAP 1.2 port choice, redirects, check(), masking, and X-Road over REST."""

from __future__ import annotations

import logging

import pytest
from lxml import etree

from adapters.base import OutcomeKind
from adapters.plugins import MaskingLogger
from adapters.rest import RestAdapter
from adapters.soap import SoapAdapter
from adapters.soap_client import forget_documents
from core.domain.errors import (
    ConfigError,
    PermanentAgencyError,
    TransientAgencyError,
)
from core.masking import mask_answer as mask_text

TNS = "urn:test:echo"
WSDL = f"""<?xml version="1.0"?>
<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
  xmlns:soap12="http://schemas.xmlsoap.org/wsdl/soap12/" xmlns:xs="http://www.w3.org/2001/XMLSchema"
  xmlns:tns="{TNS}" targetNamespace="{TNS}">
  <types><xs:schema targetNamespace="{TNS}" elementFormDefault="qualified">
    <xs:element name="Register"><xs:complexType><xs:sequence>
      <xs:element name="request_id" type="xs:string" minOccurs="0"/>
      <xs:element name="nik" type="xs:string" minOccurs="0"/></xs:sequence></xs:complexType></xs:element>
    <xs:element name="RegisterResponse"><xs:complexType><xs:sequence>
      <xs:element name="reference" type="xs:string" minOccurs="0"/>
      <xs:element name="code" type="xs:int" minOccurs="0"/></xs:sequence></xs:complexType></xs:element>
  </xs:schema></types>
  <message name="RegisterIn"><part name="parameters" element="tns:Register"/></message>
  <message name="RegisterOut"><part name="parameters" element="tns:RegisterResponse"/></message>
  <portType name="EchoPort"><operation name="Register"><input message="tns:RegisterIn"/>
    <output message="tns:RegisterOut"/></operation></portType>
  <binding name="Echo11" type="tns:EchoPort"><soap:binding transport="http://schemas.xmlsoap.org/soap/http"/>
    <operation name="Register"><soap:operation soapAction="Register"/><input><soap:body use="literal"/></input>
    <output><soap:body use="literal"/></output></operation></binding>
  <binding name="Echo12" type="tns:EchoPort"><soap12:binding transport="http://schemas.xmlsoap.org/soap/http"/>
    <operation name="Register"><soap12:operation soapAction="Register"/><input><soap12:body use="literal"/></input>
    <output><soap12:body use="literal"/></output></operation></binding>
  <service name="EchoService">
    <port name="Echo11Port" binding="tns:Echo11"><soap:address location="http://wrong.invalid/"/></port>
    <port name="Echo12Port" binding="tns:Echo12"><soap12:address location="http://wrong.invalid/"/></port>
  </service>
</definitions>"""
ENV11 = "http://schemas.xmlsoap.org/soap/envelope/"
ENV12 = "http://www.w3.org/2003/05/soap-envelope"


def envelope(body: str, header: str = "", ns: str = ENV11) -> str:
    return f'<e:Envelope xmlns:e="{ns}"><e:Header>{header}</e:Header><e:Body>{body}</e:Body></e:Envelope>'


def answer(reference: str = "R-1", code: int = 50) -> str:
    return f'<t:RegisterResponse xmlns:t="{TNS}"><t:reference>{reference}</t:reference><t:code>{code}</t:code></t:RegisterResponse>'


def fault(code: str, message: str) -> str:
    return f"<e:Fault><faultcode>e:{code}</faultcode><faultstring>{message}</faultstring></e:Fault>"


XROAD = {"client": {"instance": "ID", "member_class": "GOV", "member_code": "1", "subsystem_code": "sp"},
         "service": {"instance": "ID", "member_class": "GOV", "member_code": "2", "subsystem_code": "tax"},
         "user_id": "u1"}
OPS = {"register": {"operation": "Register", "response": {"reference": "reference", "status": "code"}}}


@pytest.fixture
def soap_agency(fake_agency, make_agency):
    forget_documents()
    fake_agency.route("GET", "/", 200, body=WSDL)

    def build(xroad: bool = False, **options):
        extra = {"xroad": {**XROAD, "security_server": fake_agency.url}} if xroad else {}
        return SoapAdapter(make_agency(fake_agency.url, OPS, adapter="soap", statuses={"50": "approved"},
                                       options={"wsdl": f"{fake_agency.url}/?wsdl", **options}, **extra))
    return fake_agency, build


def test_soap_1_2_port_is_chosen_when_asked(soap_agency, request_factory):
    fake, build = soap_agency
    fake.route("POST", "/", 200, body=envelope(answer(), ns=ENV12), headers={"Content-Type": "application/soap+xml"})
    outcome = build(soap_version="1.2").send(request_factory(payload={"nik": "3171012345670123"}))
    assert outcome.reference == "R-1"
    assert fake.last.headers["Content-Type"].startswith("application/soap+xml")
    assert ENV12.encode() in fake.last.body and b"<ns0:request_id>req-0001<" in fake.last.body


def test_check_names_missing_operations_and_bad_wsdls(soap_agency, make_agency):
    fake, _build = soap_agency
    agency = make_agency(fake.url, {"x": {"operation": "Nope"}}, adapter="soap", options={"wsdl": f"{fake.url}/?wsdl"})
    assert any("has no operation 'Nope'; it has: Register" in p for p in SoapAdapter(agency).check())
    missing = make_agency(fake.url, OPS, adapter="soap", options={"wsdl": f"{fake.url}/missing.wsdl"})
    assert any("options.wsdl" in p and "HTTP 404" in p for p in SoapAdapter(missing).check())


def test_soap_redirect_is_not_followed(soap_agency, request_factory):
    fake, build = soap_agency
    fake.route("POST", "/", 307, body="", headers={"Location": fake.url + "/other"})
    with pytest.raises(PermanentAgencyError, match="redirects are not followed"):
        build().send(request_factory(payload={}))
    assert all(s.path != "/other" for s in fake.seen)


@pytest.mark.parametrize(("code", "error"), [
    ("Server.ServerProxy.NetworkError", TransientAgencyError),
    ("Server.ClientProxy.NetworkError", TransientAgencyError),
    ("Server.ServerProxy.AccessDenied", PermanentAgencyError),
    ("Client.InvalidClientIdentifier", PermanentAgencyError),
])
def test_xroad_security_server_faults_name_the_error_type(soap_agency, request_factory, code, error):
    fake, build = soap_agency
    fake.route("POST", "/", 500, body=envelope(fault(code, "from the security server")))
    with pytest.raises(error, match=code.replace(".", r"\.")):
        build(xroad=True).send(request_factory(payload={}))


def _echo(request_id: str = "req-0001", member: str = "2") -> str:
    ids = "".join(f'<id:{n}>{v}</id:{n}>' for n, v in
                  (("xRoadInstance", "ID"), ("memberClass", "GOV"), ("memberCode", "1"), ("subsystemCode", "sp")))
    service = "".join(f'<id:{n}>{v}</id:{n}>' for n, v in
                      (("xRoadInstance", "ID"), ("memberClass", "GOV"), ("memberCode", member),
                       ("subsystemCode", "tax"), ("serviceCode", "Register")))
    ns = 'xmlns:x="http://x-road.eu/xsd/xroad.xsd" xmlns:id="http://x-road.eu/xsd/identifiers"'
    return (f'<x:client {ns}>{ids}</x:client><x:service {ns}>{service}</x:service>'
            f'<x:id {ns}>{request_id}</x:id>')


def test_xroad_answer_must_echo_our_id_client_and_service(soap_agency, request_factory):
    fake, build = soap_agency
    adapter = build(xroad=True)
    fake.route("POST", "/", 200, body=envelope(answer(), _echo()))
    assert adapter.send(request_factory(payload={})).kind is OutcomeKind.APPROVED
    sent = etree.fromstring(fake.last.body)
    assert sent.findtext(".//{http://x-road.eu/xsd/xroad.xsd}protocolVersion") == "4.0"
    assert sent.findtext(".//{http://x-road.eu/xsd/xroad.xsd}issue") == "app-42"
    fake.route("POST", "/", 200, body=envelope(answer(), _echo(request_id="someone-else")))
    with pytest.raises(PermanentAgencyError, match="echoes id 'someone-else', expected 'req-0001'"):
        adapter.send(request_factory(payload={}))
    fake.route("POST", "/", 200, body=envelope(answer(), _echo(member="9")))
    with pytest.raises(PermanentAgencyError, match="echoes service"):
        adapter.send(request_factory(payload={}))
    fake.route("POST", "/", 200, body=envelope(answer()))
    with pytest.raises(PermanentAgencyError, match="X-Road answer echoes id None"):
        adapter.send(request_factory(payload={}))


def test_incomplete_xroad_section_is_a_config_error(make_agency):
    with pytest.raises(ConfigError, match="xroad.client"):
        RestAdapter(make_agency("http://x", {"op": {}}, xroad={"client": {}, "service": {}, "security_server": "http://s"}))


def test_xroad_rest_url_and_headers(fake_agency, make_agency, request_factory):
    xroad = {**XROAD, "service": {**XROAD["service"], "service_version": "v1"}, "security_server": fake_agency.url}
    fake_agency.route("POST", "/r1/ID/GOV/2/tax/companies.v1/register", 200, {"status": "OK"})
    adapter = RestAdapter(make_agency("http://unused", {"register": {"path": "/register", "service_code": "companies"}},
                                      xroad=xroad))
    assert adapter.send(request_factory()).kind is OutcomeKind.APPROVED
    headers = fake_agency.last.headers
    assert headers["X-Road-Client"] == "ID/GOV/1/sp"
    assert (headers["X-Road-Id"], headers["X-Road-Userid"], headers["X-Road-Issue"]) == ("req-0001", "u1", "app-42")


@pytest.mark.parametrize(("kind", "error"), [("Server.ServerProxy.NetworkError", TransientAgencyError),
                                             ("Server.ServerProxy.AccessDenied", PermanentAgencyError)])
def test_xroad_rest_errors_name_the_type(fake_agency, make_agency, request_factory, kind, error):
    xroad = {**XROAD, "security_server": fake_agency.url}
    fake_agency.route("POST", "/r1/ID/GOV/2/tax/register", 500,
                      {"type": kind, "message": "denied or down", "detail": "abc"}, headers={"X-Road-Error": kind})
    adapter = RestAdapter(make_agency("http://unused", {"register": {}}, xroad=xroad))
    with pytest.raises(error, match=f"X-Road error {kind}: denied or down"):
        adapter.send(request_factory())


def test_envelope_logger_masks_personal_data(caplog):
    env = etree.fromstring(envelope(f'<t:R xmlns:t="{TNS}"><t:nik>3171012345670123</t:nik>'
                                    '<t:name>Budi</t:name><t:note>ktp 3171012345670123</t:note></t:R>'))
    with caplog.at_level(logging.DEBUG, logger="satupintu.soap"):
        MaskingLogger().ingress(env, {}, None)
    text = caplog.text
    assert "3171012345670123" not in text and "Budi" not in text
    assert "ktp 3171********0123" in text and "<t:nik>***</t:nik>" in text


def test_mask_text_masks_json_fields_and_niks():
    masked = mask_text('{"name": "Budi", "nik": 3171012345670123, "npwp": "012345678901234", "x": "3171012345670123"}')
    assert '"name": "***"' in masked and '"nik": "***"' in masked
    assert '"x": "3171********0123"' in masked and "012345678901234" in masked  # 15 digits: not a NIK


def test_behind_xroad_the_request_id_travels_in_the_id_header_only(soap_agency, request_factory):
    fake, build = soap_agency
    fake.route("POST", "/", 200, body=envelope(answer(), _echo()))
    build(xroad=True).send(request_factory(payload={}))
    sent = etree.fromstring(fake.last.body)
    assert sent.findtext(".//{http://x-road.eu/xsd/xroad.xsd}id") == "req-0001"
    assert b"request_id>" not in fake.last.body  # no body field the WSDL would refuse
    fake.route("POST", "/", 200, body=envelope(answer()))
    build().send(request_factory(payload={}))  # without X-Road, the body field stays
    assert b"<ns0:request_id>req-0001<" in fake.last.body


def test_an_answer_without_the_mapped_status_names_its_top_level_keys(soap_agency, make_agency, request_factory):
    from adapters.answers import map_answer
    agency = make_agency("http://unused", OPS, statuses={"50": "approved"})
    with pytest.raises(PermanentAgencyError) as err:
        map_answer(agency, "register", {"status": "code"}, {"header": {"id": "x"}, "body": {"code": "50"}},
                   request_id="req-1")
    assert "its top-level keys are: body, header" in str(err.value) and "body.<field>" in str(err.value)
