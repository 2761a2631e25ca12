"""The combined status stays right when many outcomes for one bundle arrive at once.

Several trackers apply events side by side; what keeps them right is that
``gateway.tracker.apply_event`` locks the application row (``SELECT ... FOR UPDATE`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite).  Here threads play the trackers: each event
of a phase — outcomes, their redeliveries (same event id), late ``accepted`` events that a
poll's or callback's ``approved`` overtook — is applied in its own transaction, all at
once, in random order.  Afterwards each step is decided once, each released step is
dispatched exactly once (two dependencies approved at the same moment must not release
``social`` twice), the overtaken events' references are kept, every bundle ends in the
right combined status exactly once, and the hash chains hold.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from scale_support import postgres_database
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

pytestmark = [pytest.mark.scale, pytest.mark.timeout(120)]

BUNDLES = 6
THREADS = 8
REDELIVERIES = 3


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request, tmp_path):
    """Overrides the suite's store: this module runs on both, whatever the suite uses."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'satupintu.db'}"
        return
    with postgres_database() as url:
        yield url


def event(request: Any, kind: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "type": kind, "status": status, "request_id": request.id,
            "application_id": request.application_id, "service": "business-startup", "step": request.step,
            "agency": request.agency, "origin": "test", "occurred_at": None, **extra}


def apply_concurrently(engine, catalog, events: list[dict[str, Any]]) -> None:
    """Apply every event in its own transaction, THREADS at a time, in random order."""
    from gateway.tracker import apply_event
    random.shuffle(events)
    start = threading.Barrier(THREADS)

    def apply(item: tuple[int, dict[str, Any]]) -> None:
        index, ev = item
        if index < THREADS:
            start.wait(10)  # the first wave starts together
        for attempt in range(20):
            try:
                with engine.begin() as conn:
                    apply_event(conn, catalog, dict(ev))
                return
            except OperationalError:  # SQLite busy: the tracker retries the same way
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError(f"event {ev['event_id']} could not be applied")
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(apply, enumerate(events)))


def with_redeliveries(ev: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(ev) for _ in range(REDELIVERIES)]


def rows(engine, app_ids: list[str]) -> dict[str, dict[str, Any]]:
    from gateway.store import tables as t
    with engine.connect() as conn:
        out: dict[str, dict[str, Any]] = {app_id: {} for app_id in app_ids}
        for r in conn.execute(select(t.requests).where(t.requests.c.application_id.in_(app_ids))):
            out[r.application_id][r.step] = r
        return out


def dispatches(engine, app_ids: list[str]) -> Counter:
    """How many dispatch messages the outbox holds per (application, step)."""
    from gateway.store import tables as t
    with engine.connect() as conn:
        bodies = [r.body for r in conn.execute(select(t.outbox.c.body))]
    return Counter((b["application_id"], b["step"]) for b in bodies
                   if b.get("application_id") in app_ids and b.get("kind", "send") == "send")


def test_concurrent_outcomes_for_the_same_bundles_settle_each_step_once(client, auth, example, engine, catalog):
    from gateway.audit import verify
    from gateway.store import tables as t

    app_ids = []
    for i in range(BUNDLES):
        body = dict(example, reference=f"RACE-{i}")
        response = client.post("/v1/applications", json=body,
                               headers={**auth, "Idempotency-Key": uuid.uuid4().hex})
        assert response.status_code == 202, response.get_json()
        app_ids.append(response.get_json()["id"])
    rejected_app = app_ids[0]  # the municipality refuses this one's permit

    # Phase 1: the company step, with attempts, redeliveries and a late "accepted".
    events = []
    for app_id, steps in rows(engine, app_ids).items():
        company = steps["company"]
        events.append(event(company, "attempt", "sent", attempt=1))
        events += with_redeliveries(event(company, "outcome", "approved", reference=f"CR-{app_id[-6:]}",
                                          output={"company_number": f"CR-{app_id[-6:]}"}))
        events.append(event(company, "outcome", "accepted", reference=f"CR-{app_id[-6:]}"))
    apply_concurrently(engine, catalog, events)
    state = rows(engine, app_ids)
    for app_id, steps in state.items():
        assert steps["company"].status == "approved"
        assert steps["company"].agency_reference == f"CR-{app_id[-6:]}"
        assert steps["tax"].status == steps["permit"].status == "queued"
        assert steps["social"].status == "pending"

    # Phase 2: tax and permit decided at the same moment; the permit's callback overtakes
    # the worker's "accepted", which carries the permit number.
    events = []
    for app_id, steps in state.items():
        tax, permit = steps["tax"], steps["permit"]
        events += with_redeliveries(event(tax, "outcome", "approved", reference=f"TAX-{app_id[-6:]}"))
        events.append(event(permit, "outcome", "accepted", reference=f"PRM-{app_id[-6:]}"))
        decision = "rejected" if app_id == rejected_app else "approved"
        events += with_redeliveries(event(permit, "callback", decision,
                                          reason="zoning" if decision == "rejected" else None))
    apply_concurrently(engine, catalog, events)
    state = rows(engine, app_ids)
    for app_id, steps in state.items():
        assert steps["tax"].status == "approved"
        assert steps["permit"].agency_reference == f"PRM-{app_id[-6:]}"
        if app_id == rejected_app:
            assert steps["permit"].status == "rejected"
            assert steps["social"].status == "skipped"
        else:
            assert steps["permit"].status == "approved"
            assert steps["social"].status == "queued"

    # Phase 3: social security, polled: the poll's "approved" races the "accepted".
    events = []
    for app_id, steps in state.items():
        if app_id == rejected_app:
            continue
        social = steps["social"]
        events.append(event(social, "outcome", "accepted", reference=f"SS-{app_id[-6:]}"))
        events += with_redeliveries(event(social, "poll", "approved"))
    apply_concurrently(engine, catalog, events)

    state = rows(engine, app_ids)
    sent = dispatches(engine, app_ids)
    with engine.connect() as conn:
        apps = {r.id: r.status for r in conn.execute(select(t.applications).where(t.applications.c.id.in_(app_ids)))}
        final_events = Counter((r.application_id, r.status) for r in conn.execute(
            select(t.events).where(t.events.c.application_id.in_(app_ids), t.events.c.type == "application")))
    for app_id in app_ids:
        expected = "rejected" if app_id == rejected_app else "completed"
        assert apps[app_id] == expected
        assert final_events[(app_id, expected)] == 1, final_events  # settled once, not once per thread
        for step in ("company", "tax", "permit"):
            assert sent[(app_id, step)] == 1, (app_id, step, sent)
        if app_id == rejected_app:
            assert sent[(app_id, "social")] == 0
        else:
            assert sent[(app_id, "social")] == 1, (app_id, sent)  # released once, though two deps raced
            assert state[app_id]["social"].status == "approved"
            assert state[app_id]["social"].agency_reference == f"SS-{app_id[-6:]}"
    report = verify(engine)
    assert report.broken is None, report.broken
