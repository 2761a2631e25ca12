"""Issue 26, finding 3: free text from outside (the front office's reference, agency faults,
callback reasons) is masked before it is stored or logged, so operators and logs never see
a NIK -- also one with letters touching it --, an e-mail address or the applicant's own
personal values."""

from __future__ import annotations

import io
import json
import logging
import time
import uuid

import pytest
from sqlalchemy import select

from core.logs import handler
from gateway import signatures
from gateway.ops import queues
from gateway.store import tables as t

HOSTILE = "owner NIK3171012345670123 (Siti Rahayu, siti@example.com)"
LEAKS = ("3171012345670123", "Siti Rahayu", "siti@example.com")  # the NIK and name are the applicant's
REFERENCE = "NIK 3171012345670999"
SECRET = "test-municipality-secret"  # SATUPINTU_MUNICIPALITY_SECRET in tests/conftest.py


@pytest.fixture(autouse=True)
def no_broker(monkeypatch):
    monkeypatch.setattr(queues, "snapshot", lambda *a, **k: queues.Snapshot(True, "reachable", (), 0.0))


@pytest.fixture
def ops(make_key):
    return {"Authorization": f"Bearer {make_key('ops', name=f'operator-{uuid.uuid4().hex[:6]}')}"}


def submit(client, auth, body):
    response = client.post("/v1/applications", json=body, headers={**auth, "Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()


def ops_text(client, ops, path, **query):
    response = client.get(path, headers=ops, query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def leaked(text: str) -> list[str]:
    return [value for value in LEAKS if value in text]


def test_a_reference_with_a_nik_never_appears_whole_in_the_ops_api(client, auth, ops, example, engine):
    doc = submit(client, auth, {**example, "reference": REFERENCE})
    assert doc["reference"] == "NIK 3171********0999"
    with engine.connect() as conn:
        assert conn.execute(select(t.applications.c.reference)).scalar() == "NIK 3171********0999"
    found = client.get("/ops/api/search", headers=ops, query_string={"q": REFERENCE}).get_json()
    assert [r["id"] for r in found["results"]] == [doc["id"]]  # found by what the front office sent
    for path, query in [("/ops/api/applications", {}), (f"/ops/api/applications/{doc['id']}", {}),
                        ("/ops/api/search", {"q": REFERENCE}), ("/ops/api/search", {"q": doc["id"]})]:
        text = ops_text(client, ops, path, **query)
        assert "3171012345670999" not in text and "3171********0999" in text, path


def test_a_callback_reason_is_masked_before_the_outbox_keeps_it(client, auth, ops, example, engine, catalog):
    from gateway.tracker import apply_event
    doc = submit(client, auth, example)
    permit = next(r["request_id"] for r in doc["requests"] if r["agency"] == "municipality")
    raw = json.dumps({"request_id": permit, "status": "rejected", "reason": HOSTILE}).encode()
    response = client.post("/v1/agencies/municipality/callbacks", data=raw, content_type="application/json",
                           headers={"X-Satupintu-Signature": signatures.sign(SECRET, raw)})
    assert response.status_code == 202, response.get_json()
    with engine.connect() as conn:
        event = conn.execute(select(t.outbox.c.body).where(t.outbox.c.exchange == "status")).scalar_one()
    assert leaked(json.dumps(event)) == [] and "NIK3171********0123" in event["reason"]
    with engine.begin() as conn:  # what the tracker does with the message
        apply_event(conn, catalog, event)
    text = ops_text(client, ops, f"/ops/api/applications/{doc['id']}")
    assert leaked(text) == [] and "NIK3171********0123" in text


def test_a_hostile_agency_fault_reaches_no_operator_unmasked(client, auth, ops, example, engine, catalog):
    from gateway.tracker import record_dead_letter
    doc = submit(client, auth, example)
    request = next(r for r in doc["requests"] if r["step"] == "company")
    body = {"message_id": uuid.uuid4().hex, "kind": "send", "request_id": request["request_id"],
            "application_id": doc["id"], "service": doc["service"], "step": "company", "agency": "company-registry",
            "operation": "register_company", "payload": {"owner_nik": "3171012345670123", "owner_name": "Siti Rahayu"}}
    headers = {"x-attempt": 3, "x-last-error": f"SOAP fault: {HOSTILE}", "x-raw-answer": f"<fault>{HOSTILE}</fault>"}
    with engine.begin() as conn:  # what the tracker does with a message from <ns>.dead
        record_dead_letter(conn, catalog, body, headers, body["message_id"])
    with engine.connect() as conn:
        stored = conn.execute(select(t.dead_letters.c.reason)).scalar_one()
        request_reason = conn.execute(select(t.requests.c.reason)
                                      .where(t.requests.c.id == request["request_id"])).scalar_one()
    assert leaked(stored) == [] and leaked(request_reason) == []
    for path in ("/ops/api/dead-letters", f"/ops/api/applications/{doc['id']}"):
        text = ops_text(client, ops, path)
        assert leaked(text) == [] and "NIK3171********0123" in text, path


def test_the_workers_dead_letter_and_its_log_line_carry_no_personal_data(catalog):
    from adapters.base import Outcome, OutcomeKind
    from broker.outcomes import decide
    from broker.retry import RetryPlan
    from broker.topology import Names
    agency = catalog.agencies["company-registry"]
    body = {"message_id": "m1", "kind": "send", "request_id": "req_1", "application_id": "app_1",
            "service": "business-startup", "step": "company", "agency": agency.id, "operation": "register_company",
            "payload": {"owner_nik": "3171012345670123", "owner_name": "Siti Rahayu"}}
    decision = decide(Outcome(kind=OutcomeKind.PERMANENT, reason=f"SOAP fault: {HOSTILE}", raw=HOSTILE),
                      agency=agency, plan=RetryPlan.for_agency(agency), names=Names("t"), kind="send", body=body,
                      headers={}, attempt=1, detail={}, now=time.time())
    assert decision.verdict == "dead"
    assert leaked(decision.reason) == [] and leaked(json.dumps([p.headers for p in decision.publishes])) == []
    line = logged("dead-lettered after %d attempt(s): %s", 1, decision.reason[:200])
    assert leaked(line) == [] and "NIK3171********0123" in line


def test_a_log_line_never_carries_a_nik_or_an_email_address_whatever_logs_it():
    line = logged("agency answered: %s", HOSTILE)
    assert "3171012345670123" not in line and "siti@example.com" not in line
    assert "NIK3171********0123" in line and "***@***" in line


def logged(message: str, *args) -> str:
    """``message`` as the handler ``core.logs.configure`` installs writes it."""
    stream = io.StringIO()
    logger = logging.getLogger(f"satupintu.test.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(handler("worker", stream))
    logger.warning(message, *args)
    return stream.getvalue()
