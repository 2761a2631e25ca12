"""Bundles as workflows, end to end on real processes: the DAG passes data between steps,
decisions arrive later by callback or poll, cancellation, history, live events, webhooks."""

import copy
import datetime as dt
import json
import threading
import uuid

import pytest
import requests
from support import edit_yaml, wait_until
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

TERMINAL = {"completed", "rejected", "failed", "cancelled"}


def headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex}


def submit(stack, key, body) -> str:
    response = requests.post(stack.url + "/v1/applications", json=body, headers=headers(key), timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def document(stack, key, app_id) -> dict:
    return requests.get(f"{stack.url}/v1/applications/{app_id}", headers=headers(key), timeout=10).json()


def steps(doc) -> dict:
    return {r["step"]: r for r in doc["requests"]}


def wait_for(stack, key, app_id, predicate, message, timeout=60) -> dict:
    def check():
        doc = document(stack, key, app_id)
        return doc if predicate(doc) else None
    return wait_until(check, timeout, message=message)


def history(stack, key, app_id) -> list:
    return requests.get(f"{stack.url}/v1/applications/{app_id}/history", headers=headers(key),
                        timeout=10).json()["events"]


def test_tax_office_receives_the_company_number_from_the_registry(stack, sandbox, api_key, example):
    app_id = submit(stack, api_key, example)
    doc = wait_for(stack, api_key, app_id, lambda d: d["status"] in TERMINAL, "the bundle to finish")
    assert doc["status"] == "completed", stack.tail()
    by_step = steps(doc)
    company_number = by_step["company"]["agency_reference"]
    assert company_number.startswith("AHU-")
    tax_calls = [r for r in sandbox.requests("tax-office") if "RegisterTaxpayer" in r["body"]]
    assert len(tax_calls) == 1
    assert f">{company_number}<" in tax_calls[0]["body"]
    social_calls = [r for r in sandbox.requests("social-security") if "EnrolEmployer" in r["body"]]
    assert f">{by_step['tax']['agency_reference']}<" in social_calls[0]["body"]  # the NPWP
    # Order: the tax office and the municipality were called only after the registry approved.
    events = history(stack, api_key, app_id)

    def moment(value: str) -> dt.datetime:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))

    approved_company = next(moment(e["recorded_at"]) for e in events
                            if e["step"] == "company" and e["status"] == "approved")
    tax_started = min(moment(e["detail"]["started_at"]) for e in events
                      if e["step"] == "tax" and "started_at" in e["detail"])
    assert approved_company < tax_started


def test_a_rejected_company_skips_every_later_step(stack, api_key, example):
    body = copy.deepcopy(example)
    body["data"]["company"]["name"] = "PT REJECT Sekali"
    app_id = submit(stack, api_key, body)
    doc = wait_for(stack, api_key, app_id, lambda d: d["status"] in TERMINAL, "the bundle to finish")
    assert doc["status"] == "rejected"
    assert {s: r["status"] for s, r in steps(doc).items()} == {
        "company": "rejected", "tax": "skipped", "permit": "skipped", "social": "skipped"}
    assert "company" in steps(doc)["tax"]["reason"]


def test_the_municipality_decides_later_by_signed_callback(stack, sandbox, api_key, example):
    app_id = submit(stack, api_key, example)
    doc = wait_for(stack, api_key, app_id, lambda d: d["status"] in TERMINAL, "the bundle to finish")
    assert doc["status"] == "completed"
    events = [e for e in history(stack, api_key, app_id) if e["step"] == "permit"]
    kinds = [(e["type"], e["status"]) for e in events if e["status"]]
    assert ("outcome", "accepted") in kinds and ("callback", "approved") in kinds
    assert sandbox.stats("municipality")["callbacks_sent"] >= 1


def test_social_security_is_polled_until_it_decides(stack, api_key, example):
    app_id = submit(stack, api_key, example)
    doc = wait_for(stack, api_key, app_id, lambda d: d["status"] in TERMINAL, "the bundle to finish")
    assert steps(doc)["social"]["status"] == "approved"
    events = [e for e in history(stack, api_key, app_id) if e["step"] == "social"]
    assert ("poll", "approved") in [(e["type"], e["status"]) for e in events]


@pytest.fixture
def short_poll_deadline(config_dir):
    edit_yaml(config_dir / "agencies" / "social-security.yaml",
              lambda d: d.update(poll={"interval": 0.5, "backoff": 1, "max_interval": 0.5, "deadline": 2}))


def test_polling_gives_up_at_the_deadline(short_poll_deadline, stack, sandbox, api_key, example):
    sandbox.faults("social-security", decision_delay=600)
    app_id = submit(stack, api_key, example)
    doc = wait_for(stack, api_key, app_id, lambda d: d["status"] in TERMINAL, "the bundle to fail")
    assert doc["status"] == "failed"
    social = steps(doc)["social"]
    assert social["status"] == "failed"
    assert social["reason"] == "no decision within 2 s"


def test_cancel_before_anything_was_sent_cancels_every_step(stack, sandbox, api_key, example):
    sandbox.faults("company-registry", latency_ms=3000)  # keep the first step in flight
    app_id = submit(stack, api_key, example)
    response = requests.post(f"{stack.url}/v1/applications/{app_id}/cancel", headers=headers(api_key), timeout=10)
    assert response.status_code == 202
    assert {s: r["status"] for s, r in steps(response.json()).items() if s != "company"} == {
        "tax": "cancelled", "permit": "cancelled", "social": "cancelled"}
    doc = wait_for(stack, api_key, app_id, lambda d: d["status"] in TERMINAL, "the bundle to end")
    assert doc["status"] == "cancelled"
    again = requests.post(f"{stack.url}/v1/applications/{app_id}/cancel", headers=headers(api_key), timeout=10)
    assert again.status_code == 409


def test_cancel_of_an_accepted_permit_asks_the_municipality_to_cancel(stack, sandbox, api_key, example):
    sandbox.faults("municipality", decision_delay=600)
    app_id = submit(stack, api_key, example)
    wait_for(stack, api_key, app_id, lambda d: steps(d)["permit"]["status"] == "accepted", "the permit accepted")
    response = requests.post(f"{stack.url}/v1/applications/{app_id}/cancel", headers=headers(api_key), timeout=10)
    assert response.status_code == 202
    doc = wait_for(stack, api_key, app_id, lambda d: d["status"] in TERMINAL, "the bundle to end")
    assert doc["status"] == "cancelled"
    assert steps(doc)["permit"]["status"] == "cancelled"
    assert steps(doc)["social"]["status"] == "cancelled"
    assert any(r["method"] == "DELETE" for r in sandbox.requests("municipality"))


@pytest.fixture
def social_security_cannot_cancel(config_dir):
    edit_yaml(config_dir / "agencies" / "social-security.yaml",
              lambda d: d["operations"]["enrol_employer"].pop("cancel"))


def test_cancel_where_the_agency_cannot_records_the_request_and_waits(social_security_cannot_cancel, stack,
                                                                         sandbox, api_key, example):
    sandbox.faults("social-security", decision_delay=4)
    app_id = submit(stack, api_key, example)
    wait_for(stack, api_key, app_id, lambda d: steps(d)["social"]["status"] == "accepted", "enrolment accepted")
    requests.post(f"{stack.url}/v1/applications/{app_id}/cancel", headers=headers(api_key), timeout=10)
    doc = wait_for(stack, api_key, app_id, lambda d: d["status"] in TERMINAL, "the bundle to end")
    assert doc["status"] == "cancelled"
    assert steps(doc)["social"]["status"] == "approved"  # the decision still arrived
    types = [e["type"] for e in history(stack, api_key, app_id)]
    assert "cancel" in types and "cancel-unsupported" in types


def test_cancel_of_a_finished_application_is_a_conflict(stack, api_key, example):
    app_id = submit(stack, api_key, example)
    wait_for(stack, api_key, app_id, lambda d: d["status"] in TERMINAL, "the bundle to finish")
    response = requests.post(f"{stack.url}/v1/applications/{app_id}/cancel", headers=headers(api_key), timeout=10)
    assert response.status_code == 409
    assert response.headers["Content-Type"].startswith("application/problem+json")


def test_the_event_stream_shows_a_running_bundle_and_resumes(stack, api_key, example):
    app_id = submit(stack, api_key, example)
    seen = []
    with requests.get(f"{stack.url}/v1/applications/{app_id}/events", headers=headers(api_key), stream=True,
                      timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        event = {}
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("id: "):
                event["id"] = int(line[4:])
            elif line.startswith("event: "):
                event["type"] = line[7:]
            elif line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif line == "" and event:
                seen.append(event)
                event = {}
                if seen[-1]["type"] == "end":
                    break
    assert seen[0]["type"] == "submitted"
    assert seen[-1]["type"] == "end"
    final = [e for e in seen if e["type"] == "application"]
    assert final and final[-1]["data"]["status"] == "completed"
    # Resuming from an id sends only what came after it.
    middle = seen[len(seen) // 2]["id"]
    resumed = requests.get(f"{stack.url}/v1/applications/{app_id}/events",
                           headers={**headers(api_key), "Last-Event-ID": str(middle)}, timeout=60).text
    ids = [int(line[4:]) for line in resumed.splitlines() if line.startswith("id: ")]
    assert ids and min(ids) > middle and middle not in ids


class WebhookReceiver:
    """A real HTTP server that fails the first ``failures`` deliveries, then answers 204."""

    def __init__(self, failures: int):
        self.failures = failures
        self.received: list[dict] = []
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def app(self, environ, start_response):
        request = Request(environ)
        self.received.append({"body": request.get_data(), "signature": request.headers.get("X-Satupintu-Signature")})
        status = 500 if len(self.received) <= self.failures else 204
        return Response(status=status)(environ, start_response)


def test_webhooks_are_retried_until_the_receiver_answers_2xx(stack, make_key, example, engine):
    import hashlib

    from core.settings import Settings
    from gateway import clients
    from gateway.signatures import verify
    receiver = WebhookReceiver(failures=2)
    key = make_key("submit", "read", webhook_url=receiver.url)
    app_id = submit(stack, key, example)
    wait_until(lambda: len(receiver.received) >= 3, 60, message="three webhook deliveries")
    receiver.server.shutdown()
    last = receiver.received[2]
    body = json.loads(last["body"])
    assert body["application_id"] == app_id and body["status"] == "completed"
    # Signed like callbacks, with the client's own webhook secret (derived with the server's
    # key); no longer with the SHA-256 of its API key, which the store holds (issue 26, finding 5).
    with engine.connect() as conn:
        name = clients.authenticate(conn, key).name
        secret = clients.webhook_secret_of(conn, name, Settings().webhook_key)
    assert verify(secret, last["body"], last["signature"]) is None
    assert verify(hashlib.sha256(key.encode()).hexdigest(), last["body"], last["signature"]) is not None
    events = wait_until(lambda: [e for e in history(stack, key, app_id) if e["type"] == "notification"], 30,
                        message="the delivery in the history")
    assert events[0]["detail"]["delivered"] is True and events[0]["detail"]["attempts"] == 3
