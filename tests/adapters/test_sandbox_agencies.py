"""Both adapters against the real sandbox agencies (``python -m sandbox``) over HTTP."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest

from adapters.base import OutcomeKind
from adapters.rest import RestAdapter
from adapters.soap import SoapAdapter
from core.domain.errors import PermanentAgencyError, TransientAgencyError

NIK = "3171012345670123"


def rid() -> str:
    return f"req-{uuid.uuid4().hex[:12]}"


# -- REST: company registry and municipality -----------------------------------------------

def registry_adapter(sandbox, make_agency, **kwargs):
    operations = {"register": {
        "path": "/companies",
        "response": {"reference": "company_number", "status": "status", "reason": "reason"},
        "lookup": {"path": "/companies?request_id={request_id}", "response": {"reference": "company_number",
                                                                               "status": "status"}},
    }}
    return RestAdapter(make_agency(sandbox.urls["company-registry"], operations, id="company-registry",
                                   statuses={"REGISTERED": "approved", "REJECTED": "rejected"}, **kwargs))


def company(request_factory, **kwargs):
    payload = kwargs.pop("payload", {"company_name": "PT Maju Jaya", "owner_nik": NIK})
    return request_factory("register", payload, request_id=kwargs.pop("request_id", rid()), **kwargs)


def test_company_registry_registers_once_per_request_id(sandbox, make_agency, request_factory):
    adapter = registry_adapter(sandbox, make_agency)
    request = company(request_factory, headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    first, again = adapter.send(request), adapter.send(dataclasses.replace(request, attempt=2))
    assert first.kind is OutcomeKind.APPROVED and first.reference.startswith("AHU-")
    assert again.reference == first.reference
    wire = sandbox.recent("company-registry", 2)
    assert {w["headers"]["Idempotency-Key"] for w in wire} == {request.request_id}
    assert wire[0]["headers"]["Traceparent"].startswith("00-4bf92f")
    assert adapter.lookup(request).reference == first.reference
    assert adapter.lookup(company(request_factory)) is None


def test_company_registry_rejection_is_an_outcome(sandbox, make_agency, request_factory):
    outcome = registry_adapter(sandbox, make_agency).send(
        company(request_factory, payload={"company_name": "PT REJECT Me"}))
    assert outcome.kind is OutcomeKind.REJECTED and outcome.reason


@pytest.mark.parametrize(("knob", "good", "bad"), [
    ({"type": "bearer", "token": "t0ken"}, {"type": "bearer", "token": "t0ken"}, {"type": "bearer", "token": "nope"}),
    ({"type": "basic", "username": "satu", "password": "pintu"},
     {"type": "basic", "username": "satu", "password": "pintu"}, {"type": "basic", "username": "satu", "password": "x"}),
    ({"type": "api_key", "header": "X-Api-Key", "value": "k3y"},
     {"type": "api_key", "header": "X-Api-Key", "value": "k3y"}, {"type": "api_key", "header": "X-Api-Key", "value": "x"}),
    ({"type": "hmac", "secret": "hm4c"}, {"type": "hmac", "secret": "hm4c"}, {"type": "hmac", "secret": "wrong"}),
], ids=["bearer", "basic", "api_key", "hmac"])
def test_rest_auth_modes(sandbox, make_agency, request_factory, knob, good, bad):
    sandbox.knobs("company-registry", auth=knob)
    assert registry_adapter(sandbox, make_agency, auth=good).send(company(request_factory)).kind is OutcomeKind.APPROVED
    with pytest.raises(PermanentAgencyError, match="HTTP 401.*credentials refused") as info:
        registry_adapter(sandbox, make_agency, auth=bad).send(company(request_factory))
    assert info.value.status_code == 401


def test_rest_outage_and_injected_failures_are_transient(sandbox, make_agency, request_factory):
    adapter = registry_adapter(sandbox, make_agency)
    sandbox.knobs("company-registry", failure_rate=1.0)
    with pytest.raises(TransientAgencyError, match="HTTP 503"):
        adapter.send(company(request_factory))


def test_rest_latency_beyond_read_timeout_is_transient(sandbox, make_agency, request_factory):
    sandbox.knobs("company-registry", latency_ms=1500)
    with pytest.raises(TransientAgencyError, match="no answer within 0.5 s"):
        registry_adapter(sandbox, make_agency, read_timeout=0.5).send(company(request_factory))


def test_municipality_accepts_then_decides_and_can_cancel(sandbox, make_agency, request_factory, fake_agency):
    operations = {"permit": {
        "path": "/permits", "response": {"reference": "permit_id", "status": "status", "reason": "reason"},
        "poll": {"path": "/permits/{reference}", "response": {"status": "status", "reason": "reason"}},
        "cancel": {"path": "/permits/{reference}", "response": {"status": "status"}},
    }}
    adapter = RestAdapter(make_agency(sandbox.urls["municipality"], operations, id="municipality", decisions="poll",
                                      statuses={"RECEIVED": "accepted", "APPROVED": "approved", "GRANTED": "approved",
                                                "REJECTED": "rejected", "CANCELLED": "cancelled"}))
    fake_agency.route("POST", "/callbacks", 200, {})  # decisions are also called back; nobody listens here
    sandbox.knobs("municipality", decision_delay=0.2, callback_url=f"{fake_agency.url}/callbacks", callback_secret="s")
    first = adapter.send(request_factory("permit", {"company_name": "PT Maju"}, request_id=rid()))
    assert first.kind is OutcomeKind.ACCEPTED and first.reference
    polled = adapter.poll(request_factory("permit", reference=first.reference))
    deadline = time.monotonic() + 5
    while polled.kind is OutcomeKind.ACCEPTED and time.monotonic() < deadline:
        time.sleep(0.1)
        polled = adapter.poll(request_factory("permit", reference=first.reference))
    assert polled.kind is OutcomeKind.APPROVED

    sandbox.knobs("municipality", decision_delay=30)
    second = adapter.send(request_factory("permit", {"company_name": "PT Batal"}, request_id=rid()))
    assert adapter.cancel(request_factory("permit", reference=second.reference)).kind is OutcomeKind.CANCELLED


# -- SOAP: tax office and social security ----------------------------------------------------

TAX_OPERATIONS = {"register": {
    "operation": "RegisterTaxpayer",
    "response": {"reference": "npwp", "status": "status_code", "reason": "reason"},
    "lookup": {"operation": "LookupTaxpayer", "response": {"reference": "npwp", "status": "status_code"}},
}}
XROAD = {"client": {"instance": "ID", "member_class": "GOV", "member_code": "0001", "subsystem_code": "satupintu"},
         "service": {"instance": "ID", "member_class": "GOV", "member_code": "0002", "subsystem_code": "pajak"},
         "user_id": "counter-7"}


def tax_adapter(sandbox, make_agency, **kwargs):
    url = sandbox.urls["tax-office"]
    options = {"wsdl": f"{url}/?wsdl", **kwargs.pop("options", {})}
    if kwargs.pop("xroad", False):
        kwargs["xroad"] = {**XROAD, "security_server": url}
    return SoapAdapter(make_agency(url, TAX_OPERATIONS, id="tax-office", adapter="soap", options=options,
                                   statuses={"50": "approved", "90": "rejected"}, **kwargs))


def taxpayer(request_factory, **payload):
    body = {"company_number": "AHU-0000000001", "nik": NIK, "name": "Budi", "address": "Jl. Merdeka 1", **payload}
    return request_factory("register", body, request_id=rid())


def test_tax_office_registers_rejects_and_looks_up(sandbox, make_agency, request_factory):
    adapter = tax_adapter(sandbox, make_agency)
    assert adapter.check() == []
    request = taxpayer(request_factory)
    approved = adapter.send(request)
    assert approved.kind is OutcomeKind.APPROVED and approved.reference
    assert approved.output["status_code"] == 50
    wire = sandbox.recent("tax-office", 1)[0]
    assert f"request_id>{request.request_id}<" in wire["body"]
    assert wire["headers"]["Idempotency-Key"] == request.request_id
    assert adapter.lookup(request).reference == approved.reference
    assert adapter.lookup(taxpayer(request_factory)) is None
    rejected = adapter.send(taxpayer(request_factory, name="REJECT"))
    assert rejected.kind is OutcomeKind.REJECTED and rejected.reason


def test_xroad_headers_go_on_the_wire_and_the_echo_is_checked(sandbox, make_agency, request_factory):
    adapter = tax_adapter(sandbox, make_agency, xroad=True)
    request = taxpayer(request_factory)
    assert adapter.send(request).kind is OutcomeKind.APPROVED
    body = sandbox.recent("tax-office", 1)[0]["body"]
    for fragment in ('objectType="SUBSYSTEM"', 'objectType="SERVICE"', ">pajak<", ">RegisterTaxpayer</",
                     f">{request.request_id}</", ">counter-7</", f">{request.application_id}</", ">4.0</"):
        assert fragment in body


def test_social_security_enrols_polls_and_cancels(sandbox, make_agency, request_factory):
    url = sandbox.urls["social-security"]
    operations = {"enrol": {
        "operation": "EnrolEmployer", "response": {"reference": "ticket", "status": "status_code"},
        "poll": {"operation": "GetEnrolmentStatus", "reference_field": "ticket",
                 "response": {"status": "status_code", "reason": "reason"}},
        "cancel": {"operation": "CancelEnrolment", "reference_field": "ticket", "response": {"status": "status_code"}},
    }}
    adapter = SoapAdapter(make_agency(url, operations, id="social-security", adapter="soap", decisions="poll",
                                      options={"wsdl": f"{url}/?wsdl"},
                                      statuses={"41": "accepted", "50": "approved", "90": "rejected", "80": "cancelled"}))
    sandbox.knobs("social-security", decision_delay=0.2)
    payload = {"company_number": "AHU-1", "npwp": "123456789012345", "name": "PT Maju", "employees": 12}
    first = adapter.send(request_factory("enrol", payload, request_id=rid()))
    assert first.kind is OutcomeKind.ACCEPTED and first.reference.startswith("TKT-")
    deadline, polled = time.monotonic() + 5, first
    while polled.kind is OutcomeKind.ACCEPTED and time.monotonic() < deadline:
        time.sleep(0.1)
        polled = adapter.poll(request_factory("enrol", reference=first.reference))
    assert polled.kind is OutcomeKind.APPROVED

    sandbox.knobs("social-security", decision_delay=30)
    second = adapter.send(request_factory("enrol", payload, request_id=rid()))
    assert adapter.cancel(request_factory("enrol", reference=second.reference)).kind is OutcomeKind.CANCELLED


@pytest.mark.parametrize("digest", [False, True], ids=["text", "digest"])
def test_wsse_username_token(sandbox, make_agency, request_factory, digest):
    sandbox.knobs("tax-office", auth={"type": "wsse", "username": "satu", "password": "pintu"})
    good = {"type": "wsse", "username": "satu", "password": "pintu", "digest": digest}
    assert tax_adapter(sandbox, make_agency, auth=good).send(taxpayer(request_factory)).kind is OutcomeKind.APPROVED
    with pytest.raises(PermanentAgencyError, match="SOAP Fault Client: authentication failed"):
        tax_adapter(sandbox, make_agency, auth={**good, "password": "wrong"}).send(taxpayer(request_factory))


def test_soap_basic_auth(sandbox, make_agency, request_factory):
    sandbox.knobs("tax-office", auth={"type": "basic", "username": "satu", "password": "pintu"})
    good = {"type": "basic", "username": "satu", "password": "pintu"}
    assert tax_adapter(sandbox, make_agency, auth=good).send(taxpayer(request_factory)).kind is OutcomeKind.APPROVED


@pytest.mark.parametrize("bad", ["malformed", "xxe", "billion_laughs"])
def test_bad_xml_answers_are_permanent_and_never_expanded(sandbox, make_agency, request_factory, bad):
    adapter = tax_adapter(sandbox, make_agency)
    adapter.check()  # load the WSDL before the answers go bad
    sandbox.knobs("tax-office", bad_answer=bad)
    started = time.monotonic()
    with pytest.raises(PermanentAgencyError, match="malformed/unsafe answer") as info:
        adapter.send(taxpayer(request_factory))
    assert time.monotonic() - started < 5
    assert "root:" not in str(info.value) and "root:" not in (info.value.raw or "")
    assert "lollollol" not in str(info.value)


def test_wrong_shape_answer_names_the_missing_reference(sandbox, make_agency, request_factory):
    adapter = tax_adapter(sandbox, make_agency)
    sandbox.knobs("tax-office", bad_answer="wrong_shape")
    with pytest.raises(PermanentAgencyError, match="operation register: the approved answer has no reference at 'npwp'"):
        adapter.send(taxpayer(request_factory))


def test_soap_server_faults_are_transient_and_client_faults_permanent(sandbox, make_agency, request_factory):
    adapter = tax_adapter(sandbox, make_agency)
    sandbox.knobs("tax-office", failure_rate=1.0)
    with pytest.raises(TransientAgencyError, match="SOAP Fault Server"):
        adapter.send(taxpayer(request_factory))
    sandbox.knobs("tax-office", failure_rate=0.0)
    with pytest.raises(PermanentAgencyError, match="SOAP Fault Client"):
        adapter.send(taxpayer(request_factory, company_number=""))


def test_configured_fault_map_can_turn_a_fault_into_a_rejection(sandbox, make_agency, request_factory):
    url = sandbox.urls["tax-office"]
    operations = {"register": {**TAX_OPERATIONS["register"], "faults": {"are required": "rejected"}}}
    adapter = SoapAdapter(make_agency(url, operations, id="tax-office", adapter="soap",
                                      options={"wsdl": f"{url}/?wsdl"}, statuses={"50": "approved"}))
    outcome = adapter.send(taxpayer(request_factory, company_number=""))
    assert outcome.kind is OutcomeKind.REJECTED and "required" in outcome.reason


def test_soap_latency_beyond_operation_timeout_is_transient(sandbox, make_agency, request_factory):
    adapter = tax_adapter(sandbox, make_agency, options={"operation_timeout": 0.5})
    adapter.check()
    sandbox.knobs("tax-office", latency_ms=1500)
    with pytest.raises(TransientAgencyError, match=r"no answer within 0.5 s"):
        adapter.send(taxpayer(request_factory))
