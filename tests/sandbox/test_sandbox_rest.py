"""The REST agencies (company registry, municipality) and the knobs common to all agencies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import pytest
import requests

COMPANY = {
    "company_name": "PT Maju Jaya",
    "owner_nik": "3171234567890001",
    "owner_name": "Siti Rahayu",
    "address": "Jl. Merdeka 1, Jakarta",
    "sector": "retail",
}


def eventually(fetch, ready, timeout: float = 3.0):
    """Fetch until ``ready(value)`` (the sandbox counts a callback after its answer)."""
    deadline = time.monotonic() + timeout
    while not ready(value := fetch()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def key() -> str:
    return str(uuid.uuid4())


def register(
    sandbox, idem_key: str | None, body=COMPANY, **kwargs
) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if idem_key is not None:
        headers["Idempotency-Key"] = idem_key
    return requests.post(
        sandbox.url("company-registry", "/companies"),
        json=body,
        headers=headers,
        timeout=5,
        **kwargs,
    )


def file_permit(sandbox, idem_key: str, body=COMPANY) -> requests.Response:
    return requests.post(
        sandbox.url("municipality", "/permits"),
        json=body,
        headers={"Idempotency-Key": idem_key},
        timeout=5,
    )


# -- company registry ---------------------------------------------------------------


def test_registry_registers_a_company_once_per_idempotency_key(sandbox):
    request_id = key()
    first = register(sandbox, request_id)
    again = register(sandbox, request_id)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    body = first.json()
    assert body["status"] == "REGISTERED"
    assert (
        body["company_number"].startswith("AHU-") and len(body["company_number"]) == 14
    )
    stats = sandbox.stats("company-registry")
    assert stats["requests"] == 2
    assert stats["unique_request_ids"] == 1
    assert stats["duplicates"] == 1
    record = requests.get(
        sandbox.url("company-registry", f"/companies/{body['company_number']}")
    )
    assert (
        record.status_code == 200
        and record.json()["company_name"] == COMPANY["company_name"]
    )


def test_registry_lookup_tells_whether_a_filing_went_through(sandbox):
    request_id = key()
    lookup_url = sandbox.url("company-registry", f"/companies?request_id={request_id}")
    assert requests.get(lookup_url).status_code == 404
    filed = register(sandbox, request_id).json()
    found = requests.get(lookup_url)
    assert found.status_code == 200 and found.json() == filed
    assert (
        requests.get(
            sandbox.url("company-registry", "/companies/AHU-0000000000")
        ).status_code
        == 404
    )


def test_registry_rejects_by_rule_as_a_decision(sandbox):
    answer = register(sandbox, key(), {**COMPANY, "company_name": "PT REJECT Me"})
    assert answer.status_code == 200
    assert answer.json()["status"] == "REJECTED"
    assert "company_name" in answer.json()["reason"]


def test_registry_refuses_bad_input(sandbox):
    assert register(sandbox, None).status_code == 400
    assert register(sandbox, key(), {"owner_nik": "1"}).status_code == 400
    not_json = requests.post(
        sandbox.url("company-registry", "/companies"),
        data="nope",
        headers={"Idempotency-Key": key()},
    )
    assert not_json.status_code == 400 and "error" in not_json.json()


def test_injected_failure_is_not_filed_and_its_retry_is_not_a_duplicate(sandbox):
    request_id = key()
    sandbox.faults("company-registry", failure_rate=1.0)
    failed = register(sandbox, request_id)
    assert failed.status_code == 503 and "error" in failed.json()
    sandbox.faults("company-registry", failure_rate=0)
    retried = register(sandbox, request_id)
    assert retried.status_code == 201
    stats = sandbox.stats("company-registry")
    assert stats["failed_injected"] == 1
    assert stats["duplicates"] == 0
    assert stats["retries_after_failure"] == 1
    assert stats["unique_request_ids"] == 1


def test_outage_answers_503_until_it_ends_but_control_routes_work(sandbox):
    sandbox.faults("company-registry", outage_seconds=0.6)
    assert register(sandbox, key()).status_code == 503
    assert (
        requests.get(sandbox.url("company-registry", "/_sandbox/stats")).status_code
        == 200
    )
    time.sleep(0.7)
    assert register(sandbox, key()).status_code == 201


def test_latency_knob_slows_answers(sandbox):
    sandbox.faults("company-registry", latency_ms=300)
    started = time.monotonic()
    register(sandbox, key())
    assert time.monotonic() - started >= 0.3


def test_unknown_knob_is_refused_with_a_hint(sandbox):
    answer = requests.post(
        sandbox.url("company-registry", "/_sandbox/faults"), json={"latency": 5}
    )
    assert answer.status_code == 400 and "latency_ms" in answer.json()["error"]


def test_requests_log_shows_headers_on_the_wire(sandbox):
    register(sandbox, key(), headers={"X-Road-Client": "ID/GOV/1/gateway"})
    last = sandbox.requests("company-registry", 1)[0]
    assert last["method"] == "POST" and last["path"] == "/companies"
    assert last["headers"]["X-Road-Client"] == "ID/GOV/1/gateway"
    assert json.loads(last["body"])["company_name"] == COMPANY["company_name"]


def _hmac_header(
    secret: str, method: str, path: str, body: bytes, t: int | None = None
) -> str:
    t = int(time.time()) if t is None else t
    message = f"{t}.{method}.{path}.".encode() + body
    return f"t={t},v1={hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()}"


AUTH_CASES = {
    "bearer": (
        {"type": "bearer", "token": "tok"},
        {"Authorization": "Bearer tok"},
        {"Authorization": "Bearer other"},
    ),
    "basic": (
        {"type": "basic", "username": "u", "password": "p"},
        {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"u:x").decode()},
    ),
    "api_key": (
        {"type": "api_key", "header": "X-Api-Key", "value": "k"},
        {"X-Api-Key": "k"},
        {"X-Api-Key": "wrong"},
    ),
}


@pytest.mark.parametrize("kind", sorted(AUTH_CASES))
def test_header_auth_accepts_right_and_refuses_wrong_or_missing(sandbox, kind):
    knob, good, bad = AUTH_CASES[kind]
    sandbox.faults("company-registry", auth=knob)
    assert register(sandbox, key(), headers=dict(good)).status_code == 201
    assert register(sandbox, key(), headers=dict(bad)).status_code == 401
    refused = register(sandbox, key())
    assert (
        refused.status_code == 401
        and refused.json()["error"] == "authentication failed"
    )
    assert (
        requests.get(sandbox.url("company-registry", "/_sandbox/stats")).status_code
        == 200
    )


def test_hmac_auth_checks_signature_and_freshness(sandbox):
    sandbox.faults("company-registry", auth={"type": "hmac", "secret": "s"})
    body = json.dumps(COMPANY).encode()

    def post(signature: str) -> int:
        headers = {"Idempotency-Key": key(), "X-Signature": signature}
        headers["Content-Type"] = "application/json"
        url = sandbox.url("company-registry", "/companies")
        return requests.post(url, data=body, headers=headers).status_code

    assert post(_hmac_header("s", "POST", "/companies", body)) == 201
    assert post(_hmac_header("wrong", "POST", "/companies", body)) == 401
    assert (
        post(_hmac_header("s", "POST", "/companies", body, int(time.time()) - 1000))
        == 401
    )
    assert post("") == 401


# -- municipality ----------------------------------------------------------------------


def _verify(secret: str, header: str, body: bytes) -> bool:
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(
        secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256
    )
    return hmac.compare_digest(parts["v1"], expected.hexdigest())


def test_municipality_sends_a_signed_decision_callback(sandbox, callback_receiver):
    request_id = key()
    received = file_permit(sandbox, request_id)
    assert received.status_code == 202
    permit = received.json()
    assert permit["status"] == "RECEIVED" and permit["permit_id"].startswith("PRM-")
    callback = callback_receiver.next()
    assert callback["headers"]["Content-Type"] == "application/json"
    assert _verify(
        sandbox.callback_secret,
        callback["headers"]["X-Satupintu-Signature"],
        callback["body"],
    )
    assert json.loads(callback["body"]) == {
        "request_id": request_id,
        "status": "approved",
        "reference": permit["permit_id"],
    }
    now = requests.get(
        sandbox.url("municipality", f"/permits/{permit['permit_id']}")
    ).json()
    assert now["status"] == "APPROVED"
    looked_up = requests.get(
        sandbox.url("municipality", f"/permits?request_id={request_id}")
    )
    assert looked_up.json() == now
    replayed = file_permit(
        sandbox, request_id
    )  # the first answer again, not the decision
    assert (replayed.status_code, replayed.json()) == (202, permit)
    stats = eventually(
        lambda: sandbox.stats("municipality"), lambda s: s["callbacks_sent"]
    )
    assert stats["callbacks_sent"] == 1


def test_municipality_rejection_callback_carries_the_reason(sandbox, callback_receiver):
    file_permit(sandbox, key(), {**COMPANY, "sector": "REJECT"})
    body = json.loads(callback_receiver.next()["body"])
    assert body["status"] == "rejected" and "sector" in body["reason"]


def test_municipality_retries_a_failed_callback_with_backoff(
    sandbox, callback_receiver
):
    callback_receiver.statuses.extend([500, 503])
    file_permit(sandbox, key())
    answers = [callback_receiver.next()["answered"] for _ in range(3)]
    assert answers == [500, 503, 200]
    stats = eventually(
        lambda: sandbox.stats("municipality"), lambda s: s["callbacks_sent"]
    )
    assert stats["callbacks_failed"] == 2 and stats["callbacks_sent"] == 1


def test_municipality_cancel_before_decision_sends_cancelled(
    sandbox, callback_receiver
):
    sandbox.faults("municipality", decision_delay=5)
    permit = file_permit(sandbox, key()).json()
    url = sandbox.url("municipality", f"/permits/{permit['permit_id']}")
    cancelled = requests.delete(url)
    assert cancelled.status_code == 200
    assert cancelled.json() == {"permit_id": permit["permit_id"], "status": "CANCELLED"}
    assert json.loads(callback_receiver.next()["body"])["status"] == "cancelled"
    assert requests.get(url).json()["status"] == "CANCELLED"


def test_municipality_cannot_cancel_a_decided_permit(sandbox, callback_receiver):
    permit = file_permit(sandbox, key()).json()
    callback_receiver.next()
    refused = requests.delete(
        sandbox.url("municipality", f"/permits/{permit['permit_id']}")
    )
    assert refused.status_code == 409
    assert refused.json() == {"error": "already decided", "status": "APPROVED"}


def test_municipality_without_callback_url_decides_at_once(sandbox, callback_receiver):
    sandbox.faults("municipality", callback_url="")
    answer = file_permit(sandbox, key())
    assert answer.status_code == 200 and answer.json()["status"] == "APPROVED"
    rejected = file_permit(sandbox, key(), {**COMPANY, "company_name": "REJECT"})
    assert rejected.json()["status"] == "REJECTED" and rejected.json()["reason"]
    assert callback_receiver.received.empty()


def test_unknown_fault_agency_stops_start_up_with_a_message(launcher):
    with pytest.raises(RuntimeError, match="unknown agency"):
        launcher("--faults", '{"tax-ofice": {"latency_ms": 1}}')


def test_sigterm_stops_the_sandbox_cleanly(launcher):
    box = launcher()
    assert requests.get(box.urls["municipality"] + "/_sandbox/health").status_code == 200
    assert box.stop() == 0
