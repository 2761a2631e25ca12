"""What the dashboard tests share: a fixed queue snapshot (no RabbitMQ), an ops key, and
actions that put a bundle where a test needs it through the real gateway and tracker:
submitted, a worker's event applied, dead-lettered."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from gateway.ops import queues
from gateway.store import tables as t


@pytest.fixture
def fixed_queues(monkeypatch):
    """Queue depths come from a fixed snapshot: these tests need no RabbitMQ."""
    snap = queues.Snapshot(True, "reachable", (
        queues.QueueDepth("t.agency.company-registry", "agency", "company-registry", 3, 1),
        queues.QueueDepth("t.tracker", "tracker", None, 0, 1),
    ), 0.0)
    monkeypatch.setattr(queues, "snapshot", lambda *a, **k: snap)


@pytest.fixture
def operator(make_key) -> tuple[str, str]:
    """An ops key and the name of its client (what the history records as who)."""
    name = f"operator-{uuid.uuid4().hex[:6]}"
    return make_key("ops", name=name), name


@pytest.fixture
def submit(client, make_key, example):
    """Submit a bundle through POST /v1/applications; returns the application document."""
    key = make_key("submit", "read")

    def submit(**changes: Any) -> dict[str, Any]:
        response = client.post("/v1/applications", json={**example, **changes}, headers={
            "Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex})
        assert response.status_code == 202, response.get_data(as_text=True)
        return response.get_json()
    submit.key = key
    return submit


def request_of(doc: dict[str, Any], step: str) -> dict[str, Any]:
    return next(r for r in doc["requests"] if r["step"] == step)


@pytest.fixture
def worker_event(engine, catalog):
    """Apply an event a worker published, through the tracker, as it arrives from the broker."""
    from gateway.tracker import apply_event

    def apply(doc: dict[str, Any], step: str, type: str, **fields: Any) -> None:
        request = request_of(doc, step)
        event = {"event_id": uuid.uuid4().hex, "type": type, "request_id": request["request_id"],
                 "application_id": doc["id"], "service": doc["service"], "step": step,
                 "agency": request["agency"], "status": None, "attempt": None, "reference": None,
                 "reason": None, "output": None, "detail": {}, "occurred_at": None, **fields}
        with engine.begin() as conn:
            apply_event(conn, catalog, event)
    return apply


@pytest.fixture
def dead_letter(engine, catalog):
    """Dead-letter ``step`` of ``doc`` after ``attempts`` as the worker does: the message on
    ``<ns>.dead`` with its headers, kept by the tracker.  Returns the dead letter's id."""
    from gateway.tracker import record_dead_letter

    def make(doc: dict[str, Any], step: str = "company", *, attempts: int = 1, reason: str = "HTTP 503") -> int:
        request = request_of(doc, step)
        body = {"message_id": uuid.uuid4().hex, "kind": "send", "request_id": request["request_id"],
                "application_id": doc["id"], "service": doc["service"], "step": step,
                "agency": request["agency"], "operation": "op", "payload": {}}
        with engine.begin() as conn:
            record_dead_letter(conn, catalog, body, {"x-attempt": attempts, "x-last-error": reason},
                               body["message_id"])
        with engine.connect() as conn:
            return conn.execute(select(t.dead_letters.c.id)
                                .where(t.dead_letters.c.message_id == body["message_id"])).scalar_one()
    return make
