"""The REST adapter against tiny in-test agencies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading

import jsonschema
import pytest
from werkzeug.wrappers import Response

from adapters.base import OutcomeKind
from adapters.rest import RestAdapter
from core.domain.errors import (
    PermanentAgencyError,
    TransientAgencyError,
    UnsupportedOperation,
)

NIK = "3171012345670123"
STATUSES = {"REGISTERED": "approved", "REJECTED": "rejected", "RECEIVED": "accepted"}
REGISTER = {
    "method": "POST", "path": "/companies",
    "response": {"reference": "company_number", "status": "status", "reason": "reason"},
    "lookup": {"path": "/companies?request_id={request_id}",
               "response": {"reference": "company_number", "status": "status"}},
}


@pytest.fixture
def registry(fake_agency, make_agency):
    agency = make_agency(fake_agency.url, {"register": REGISTER}, statuses=STATUSES)
    adapter = RestAdapter(agency)
    yield fake_agency, adapter
    adapter.close()


def test_send_posts_payload_with_idempotency_and_correlation_headers(registry, request_factory):
    fake, adapter = registry
    fake.route("POST", "/companies", 201, {"company_number": "AHU-1", "status": "REGISTERED"})
    request = request_factory(payload={"name": "PT Maju", "nik": NIK},
                              headers={"traceparent": "00-abc-def-01", "X-Satupintu-Application": "app-42"})
    outcome = adapter.send(request)
    assert outcome.kind is OutcomeKind.APPROVED
    assert outcome.reference == "AHU-1"
    assert outcome.output == {"company_number": "AHU-1", "status": "REGISTERED"}
    seen = fake.last
    assert seen.json() == {"name": "PT Maju", "nik": NIK}
    assert seen.headers["Idempotency-Key"] == "req-0001"
    assert seen.headers["Traceparent"] == "00-abc-def-01"
    assert seen.headers["X-Satupintu-Application"] == "app-42"


def test_rejection_is_an_outcome_with_the_agency_reason(registry, request_factory):
    fake, adapter = registry
    fake.route("POST", "/companies", 200, {"status": "REJECTED", "reason": "name taken"})
    outcome = adapter.send(request_factory())
    assert (outcome.kind, outcome.reason, outcome.reference) == (OutcomeKind.REJECTED, "name taken", None)


def test_unknown_status_code_is_a_permanent_failure_naming_it(registry, request_factory):
    fake, adapter = registry
    fake.route("POST", "/companies", 200, {"status": "FROZEN", "nik": NIK})
    with pytest.raises(PermanentAgencyError, match="agency test-agency operation register: unknown status code 'FROZEN'") as info:
        adapter.send(request_factory())
    assert NIK not in info.value.raw and "3171********0123" not in info.value.raw  # personal field masked whole


def test_missing_reference_in_approved_answer_is_permanent(registry, request_factory):
    fake, adapter = registry
    fake.route("POST", "/companies", 201, {"status": "REGISTERED", "note": f"for {NIK}"})
    with pytest.raises(PermanentAgencyError, match="register: the approved answer has no reference at 'company_number'") as info:
        adapter.send(request_factory())
    assert "3171********0123" in info.value.raw
    assert info.value.request_id == "req-0001" and info.value.agency == "test-agency"


@pytest.mark.parametrize(("decisions", "kind"), [("sync", OutcomeKind.APPROVED), ("poll", OutcomeKind.ACCEPTED)])
def test_without_status_expression_the_decision_mode_decides(fake_agency, make_agency, request_factory, decisions, kind):
    fake_agency.route("POST", "/x", 200, {"id": 7})
    adapter = RestAdapter(make_agency(fake_agency.url, {"op": {"path": "/x", "response": {"reference": "id"}}},
                                      decisions=decisions))
    outcome = adapter.send(request_factory("op"))
    assert (outcome.kind, outcome.reference) == (kind, "7")


def test_path_template_fills_ids_and_payload_fields_url_quoted(fake_agency, make_agency, request_factory):
    fake_agency.route("PUT", "/a/app-42/req 1/x/y", 204)
    adapter = RestAdapter(make_agency(fake_agency.url, {"op": {"method": "PUT",
                                                              "path": "/a/{application_id}/{request_id}/{kind}"}}))
    outcome = adapter.send(request_factory("op", {"kind": "x/y"}, request_id="req 1"))
    assert outcome.kind is OutcomeKind.APPROVED and outcome.output == {}
    assert fake_agency.last.raw_uri == "/a/app-42/req%201/x%2Fy"


def test_path_field_missing_from_payload_is_permanent(fake_agency, make_agency, request_factory):
    adapter = RestAdapter(make_agency(fake_agency.url, {"op": {"path": "/a/{permit}"}}))
    with pytest.raises(PermanentAgencyError, match=r"needs \{permit\}"):
        adapter.send(request_factory("op", {}))


@pytest.mark.parametrize(("status", "error"), [(503, TransientAgencyError), (500, TransientAgencyError),
                                               (429, TransientAgencyError), (408, TransientAgencyError),
                                               (400, PermanentAgencyError), (404, PermanentAgencyError),
                                               (422, PermanentAgencyError)])
def test_http_status_classification_by_default(registry, request_factory, status, error):
    fake, adapter = registry
    fake.route("POST", "/companies", status, {"detail": "nope"})
    with pytest.raises(error, match=f"HTTP {status}.*nope") as info:
        adapter.send(request_factory())
    assert info.value.status_code == status


def test_configured_status_classes_override_the_defaults(fake_agency, make_agency, request_factory):
    agency = make_agency(fake_agency.url, {"op": {"path": "/x"}},
                         options={"permanent_statuses": [501], "transient_statuses": ["4xx", "5xx"]})
    adapter = RestAdapter(agency)
    fake_agency.route("POST", "/x", 501)
    with pytest.raises(PermanentAgencyError):
        adapter.send(request_factory("op"))
    fake_agency.route("POST", "/x", 409)
    with pytest.raises(TransientAgencyError):
        adapter.send(request_factory("op"))


def test_success_statuses_let_an_agency_answer_a_decision_with_4xx(fake_agency, make_agency, request_factory):
    agency = make_agency(fake_agency.url, {"op": {"path": "/x", "success_statuses": [200, 422],
                                                  "response": {"status": "result", "reason": "why"}}},
                         statuses={"no": "rejected"})
    fake_agency.route("POST", "/x", 422, {"result": "no", "why": "incomplete"})
    outcome = RestAdapter(agency).send(request_factory("op"))
    assert (outcome.kind, outcome.reason) == (OutcomeKind.REJECTED, "incomplete")


def test_credentials_refused_is_permanent_and_says_so(registry, request_factory):
    fake, adapter = registry
    fake.route("POST", "/companies", 401, {"error": "bad token"})
    with pytest.raises(PermanentAgencyError, match="HTTP 401.*credentials refused; auth type 'none'.*bad token"):
        adapter.send(request_factory())


def test_redirects_are_never_followed(registry, request_factory):
    fake, adapter = registry
    fake.route("POST", "/companies", 302, headers={"Location": fake.url + "/elsewhere"})
    fake.route("POST", "/elsewhere", 201, {"company_number": "X", "status": "REGISTERED"})
    with pytest.raises(PermanentAgencyError, match="redirects are not followed"):
        adapter.send(request_factory())
    assert [s.path for s in fake.seen] == ["/companies"]


def test_oversized_answer_is_permanent(fake_agency, make_agency, request_factory):
    adapter = RestAdapter(make_agency(fake_agency.url, {"op": {"path": "/big"}}, options={"max_answer_bytes": 1000}))
    fake_agency.route("POST", "/big", 200, body=b"x" * 5000)
    with pytest.raises(PermanentAgencyError, match="larger than 1000 bytes"):
        adapter.send(request_factory("op"))

    def streamed(_request):  # no Content-Length: the adapter must stop reading by itself
        return Response((b"y" * 100 for _ in range(10_000)), content_type="application/json")
    fake_agency.handle("POST", "/big", streamed)
    with pytest.raises(PermanentAgencyError, match="larger than 1000 bytes") as info:
        adapter.send(request_factory("op"))
    assert len(info.value.raw) <= 2048


def test_answer_that_is_not_json_is_permanent(registry, request_factory):
    fake, adapter = registry
    fake.route("POST", "/companies", 200, body="<html>oops</html>")
    with pytest.raises(PermanentAgencyError, match="answer is not JSON") as info:
        adapter.send(request_factory())
    assert "<html>oops</html>" in info.value.raw


def test_slow_agency_is_a_transient_timeout(fake_agency, make_agency, request_factory):
    adapter = RestAdapter(make_agency(fake_agency.url, {"op": {"path": "/slow"}}, read_timeout=0.3))
    fake_agency.route("POST", "/slow", 200, {"ok": True}, delay=1.5)
    with pytest.raises(TransientAgencyError, match="no answer within 0.3 s") as info:
        adapter.send(request_factory("op"))
    assert isinstance(info.value.__cause__, Exception)


def test_connection_refused_is_transient(make_agency, request_factory):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    adapter = RestAdapter(make_agency(f"http://127.0.0.1:{port}", {"op": {"path": "/"}}))
    with pytest.raises(TransientAgencyError, match="connection failed"):
        adapter.send(request_factory("op"))


def test_lookup_finds_a_request_or_returns_none(registry, request_factory):
    fake, adapter = registry
    assert adapter.lookup(request_factory()) is None
    assert fake.last.path == "/companies" and fake.last.query == "request_id=req-0001"

    fake.route("GET", "/companies", 200, {"company_number": "AHU-9", "status": "REGISTERED"})
    outcome = adapter.lookup(request_factory())
    assert (outcome.kind, outcome.reference) == (OutcomeKind.APPROVED, "AHU-9")


def test_poll_and_cancel_use_the_reference(fake_agency, make_agency, request_factory):
    operations = {"apply": {
        "path": "/permits", "response": {"reference": "permit_id", "status": "status"},
        "poll": {"path": "/permits/{reference}", "response": {"status": "status", "reason": "reason"}},
        "cancel": {"path": "/permits/{reference}"},
    }}
    adapter = RestAdapter(make_agency(fake_agency.url, operations, decisions="poll",
                                      statuses={"RECEIVED": "accepted", "GRANTED": "approved"}))
    fake_agency.route("POST", "/permits", 202, {"permit_id": "P-1", "status": "RECEIVED"})
    fake_agency.route("GET", "/permits/P-1", 200, {"status": "GRANTED"})
    fake_agency.route("DELETE", "/permits/P-1", 204)
    first = adapter.send(request_factory("apply"))
    assert (first.kind, first.reference) == (OutcomeKind.ACCEPTED, "P-1")
    assert adapter.poll(request_factory("apply", reference="P-1")).kind is OutcomeKind.APPROVED
    assert adapter.cancel(request_factory("apply", reference="P-1")).kind is OutcomeKind.CANCELLED
    assert fake_agency.last.headers["Idempotency-Key"] == "req-0001"
    with pytest.raises(PermanentAgencyError, match=r"needs \{reference\}"):
        adapter.poll(request_factory("apply"))


def test_operations_without_poll_cancel_lookup_say_unsupported(fake_agency, make_agency, request_factory):
    adapter = RestAdapter(make_agency(fake_agency.url, {"op": {"path": "/x"}}))
    for method in (adapter.poll, adapter.cancel, adapter.lookup):
        with pytest.raises(UnsupportedOperation, match="has no"):
            method(request_factory("op"))


def test_unknown_operation_is_permanent_and_lists_known_ones(registry, request_factory):
    _fake, adapter = registry
    with pytest.raises(PermanentAgencyError, match="no operation 'nope'; it has: register"):
        adapter.send(request_factory("nope"))


def test_allowed_hosts_stop_calls_elsewhere(fake_agency, make_agency, request_factory):
    adapter = RestAdapter(make_agency(fake_agency.url, {"op": {"path": "/x"}},
                                      options={"allowed_hosts": ["registry.example.go.id"]}))
    with pytest.raises(PermanentAgencyError, match="not a host named in the configuration .options.allowed_hosts."):
        adapter.send(request_factory("op"))
    assert fake_agency.seen == []
    assert any("allowed_hosts" in p for p in adapter.check())


def test_options_and_operation_typos_fail_the_schema():
    with pytest.raises(jsonschema.ValidationError, match="max_answer_byte"):
        jsonschema.validate({"max_answer_byte": 10}, RestAdapter.options_schema)
    with pytest.raises(jsonschema.ValidationError, match="respones"):
        jsonschema.validate({"path": "/x", "respones": {}}, RestAdapter.operation_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"path": "/x", "response": {"refrence": "a"}}, RestAdapter.operation_schema)
    jsonschema.validate({"method": "POST", "path": "/x", "response": {"status": "s"}, "success_statuses": [200, "2xx"],
                         "poll": {"method": "GET", "path": "/y"}}, RestAdapter.operation_schema)


def test_check_reports_bad_expressions_templates_and_auth(make_agency, monkeypatch):
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    agency = make_agency("http://127.0.0.1:9", {"op": {"path": "/{a.b}", "response": {"status": "[[["}}},
                         auth={"type": "bearer", "token": "env:NO_SUCH_TOKEN"})
    problems = RestAdapter(agency).check()
    assert any("operations.op.response.status" in p for p in problems)
    assert any("plain name" in p for p in problems)
    assert any("NO_SUCH_TOKEN" in p for p in problems)
    wsse = make_agency("http://127.0.0.1:9", {"op": {}}, auth={"type": "wsse", "username": "u", "password": "p"})
    assert any("not supported" in p for p in RestAdapter(wsse).check())


@pytest.mark.parametrize(("auth", "check"), [
    ({"type": "bearer", "token": "env:TEST_REST_TOKEN"}, lambda h, b: h["Authorization"] == "Bearer s3cret"),
    ({"type": "basic", "username": "satu", "password": "env:TEST_REST_TOKEN"},
     lambda h, b: h["Authorization"] == "Basic " + base64.b64encode(b"satu:s3cret").decode()),
    ({"type": "api_key", "header": "X-Api-Key", "value": "env:TEST_REST_TOKEN"}, lambda h, b: h["X-Api-Key"] == "s3cret"),
])
def test_auth_modes_put_credentials_on_the_wire(fake_agency, make_agency, request_factory, monkeypatch, auth, check):
    monkeypatch.setenv("TEST_REST_TOKEN", "s3cret")
    fake_agency.route("POST", "/x", 200, {})
    RestAdapter(make_agency(fake_agency.url, {"op": {"path": "/x"}}, auth=auth)).send(request_factory("op"))
    assert check(fake_agency.last.headers, fake_agency.last.body)


def test_hmac_signs_time_method_path_and_body(fake_agency, make_agency, request_factory, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("hm4c\n")
    fake_agency.route("POST", "/x", 200, {})
    agency = make_agency(fake_agency.url, {"op": {"path": "/x?q=1"}}, auth={"type": "hmac", "secret": f"file:{secret_file}"})
    RestAdapter(agency).send(request_factory("op"))
    seen = fake_agency.last
    parts = dict(p.split("=", 1) for p in seen.headers["X-Signature"].split(","))
    expected = hmac.new(b"hm4c", f"{parts['t']}.POST./x.".encode() + seen.body, hashlib.sha256).hexdigest()
    assert parts["v1"] == expected


def test_mtls_presents_the_client_certificate_and_trusts_the_private_ca(mtls_agency, make_agency, request_factory, pki):
    mtls_agency.route("POST", "/x", 200, {"ok": 1})
    auth = {"type": "mtls", "cert": str(pki.client_cert), "key": str(pki.client_key), "ca": str(pki.ca)}
    outcome = RestAdapter(make_agency(mtls_agency.url, {"op": {"path": "/x"}}, auth=auth)).send(request_factory("op"))
    assert outcome.output == {"ok": 1}


def test_mtls_with_an_untrusted_certificate_fails(mtls_agency, make_agency, request_factory, pki):
    mtls_agency.route("POST", "/x", 200, {"ok": 1})
    auth = {"type": "mtls", "cert": str(pki.other_client_cert), "key": str(pki.other_client_key), "ca": str(pki.ca)}
    with pytest.raises((PermanentAgencyError, TransientAgencyError)):
        RestAdapter(make_agency(mtls_agency.url, {"op": {"path": "/x"}}, auth=auth)).send(request_factory("op"))
    no_ca = {"type": "mtls", "cert": str(pki.client_cert), "key": str(pki.client_key)}
    with pytest.raises(PermanentAgencyError, match="TLS failed"):
        RestAdapter(make_agency(mtls_agency.url, {"op": {"path": "/x"}}, auth=no_ca)).send(request_factory("op"))


def test_one_session_is_built_lazily_and_shared_by_threads(registry, request_factory):
    fake, adapter = registry
    fake.route("POST", "/companies", 201, {"company_number": "A", "status": "REGISTERED"})
    sessions, errors = set(), []

    def work():
        try:
            adapter.send(request_factory())
            sessions.add(id(adapter.session()))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(sessions) == 1 and len(fake.seen) == 8
    adapter.close()
    adapter.close()  # twice: still no error
    assert adapter.send(request_factory()).kind is OutcomeKind.APPROVED
