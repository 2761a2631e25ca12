"""What the timeline that ``satupintu status`` prints says: a callback's cause names its
agency once, and a failed bundle's cause names the request that failed."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from sqlalchemy import select

from gateway import signatures
from gateway.store import tables as t
from gateway.tracker import apply_event


def submit(client, auth, example) -> dict:
    response = client.post("/v1/applications", json=example, headers=auth)
    assert response.status_code == 202
    return {r["step"]: r for r in response.get_json()["requests"]} | {"id": response.get_json()["id"]}


def event(request: dict, app_id: str, status: str) -> dict:
    return {"event_id": uuid.uuid4().hex, "type": "outcome", "status": status, "request_id": request["request_id"],
            "application_id": app_id, "service": "business-startup", "step": request["step"],
            "agency": request["agency"], "attempt": 1, "origin": "worker-1", "reason": None,
            "occurred_at": dt.datetime.now(dt.UTC).isoformat()}


def history(client, auth, app_id: str) -> list[dict]:
    return client.get(f"/v1/applications/{app_id}/history", headers=auth).get_json()["events"]


def test_a_callbacks_cause_names_its_agency_once(client, auth, example, engine, catalog):
    steps = submit(client, auth, example)
    raw = json.dumps({"request_id": steps["permit"]["request_id"], "status": "approved"}).encode()
    response = client.post("/v1/agencies/municipality/callbacks", data=raw, content_type="application/json",
                           headers={"X-Satupintu-Signature": signatures.sign("test-municipality-secret", raw)})
    assert response.status_code == 202
    with engine.begin() as conn:  # what the relay would publish and the tracker apply
        body = conn.execute(select(t.outbox.c.body).where(t.outbox.c.exchange == "status")).scalar_one()
        apply_event(conn, catalog, body)
    causes = [e["cause"] for e in history(client, auth, steps["id"]) if e["type"] == "callback"]
    assert causes == ["callback from municipality"]


def test_a_failed_bundles_cause_names_the_failed_request_not_the_last_event(client, auth, example, engine, catalog):
    steps = submit(client, auth, example)
    app_id = steps["id"]
    for step, status in (("company", "approved"), ("tax", "failed"), ("permit", "approved")):
        with engine.begin() as conn:
            assert apply_event(conn, catalog, event(steps[step], app_id, status))
    settled = [e for e in history(client, auth, app_id) if e["type"] == "application"]
    assert settled[-1]["status"] == "failed" and settled[-1]["cause"] == "tax failed"
