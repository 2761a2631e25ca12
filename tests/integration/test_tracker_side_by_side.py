"""Trackers side by side, each applying whole batches (``Tracker._flush``) at the same moment
over the same applications, with redeliveries of one event landing in two trackers' batches.

Each batch locks its applications in one statement, in id order, applies the events to
copies and writes everything at its end: the state machine, the step release and the
settled status must come out exactly as if the events were applied one at a time.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

from sqlalchemy import select
from test_tracker_batches import event, flush, steps, submit

from gateway.store import tables as t

TRACKERS = 3


def side_by_side(engine, catalog, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Deal ``events`` to TRACKERS batches at random and flush them all at once."""
    random.shuffle(events)
    batches: list[list[tuple[str, dict[str, Any]]]] = [[] for _ in range(TRACKERS)]
    for i, item in enumerate(events):
        batches[i % TRACKERS].append((item[0], dict(item[1])))
    start = threading.Barrier(TRACKERS)
    channels: list[Any] = []

    def run(batch: list[tuple[str, dict[str, Any]]]) -> None:
        start.wait(10)
        channels.append(flush(engine, catalog, batch))
    threads = [threading.Thread(target=run, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(channels) == TRACKERS and all(c.acks and not c.nacks for c in channels)


def test_trackers_applying_batches_side_by_side_settle_each_step_once(client, auth, example, engine, catalog):
    from gateway.audit import verify
    app_ids = [submit(client, auth, example, f"SIDE-{i}") for i in range(6)]

    def phase(*kinds: tuple[str, str, str]) -> None:
        events = []
        for app_id in app_ids:
            state = steps(engine, app_id)
            for step, kind, status in kinds:
                request = state[step]
                ev = event(request, kind, status, reference=f"{step}-{app_id[-6:]}",
                           output={"company_number": f"CR-{app_id[-6:]}"} if step == "company" else None)
                events += [(app_id, ev), (app_id, ev)]  # redelivered: perhaps to another tracker
        side_by_side(engine, catalog, events)

    phase(("company", "outcome", "approved"), ("company", "outcome", "accepted"))
    phase(("tax", "outcome", "approved"), ("permit", "callback", "approved"), ("permit", "outcome", "accepted"))
    phase(("social", "poll", "approved"), ("social", "outcome", "accepted"))

    with engine.connect() as conn:
        requests = list(conn.execute(select(t.requests).where(t.requests.c.application_id.in_(app_ids))))
        apps = list(conn.execute(select(t.applications).where(t.applications.c.id.in_(app_ids))))
        history = list(conn.execute(select(t.events).where(t.events.c.application_id.in_(app_ids))))
        bodies = [r.body for r in conn.execute(select(t.outbox.c.body))]
    assert {r.status for r in requests} == {"approved"} and len(requests) == 4 * len(app_ids)
    assert all(r.agency_reference == f"{r.step}-{r.application_id[-6:]}" for r in requests)
    assert {a.status for a in apps} == {"completed"}
    settled = Counter(r.application_id for r in history if r.type == "application" and r.status == "completed")
    assert settled == dict.fromkeys(app_ids, 1)
    applied = Counter(r.event_id for r in history if r.type in ("outcome", "callback", "poll"))
    assert set(applied.values()) == {1}  # every redelivery recognised
    sent = Counter((b["application_id"], b["step"]) for b in bodies
                   if b["application_id"] in app_ids and b.get("kind", "send") == "send")
    assert set(sent.values()) == {1} and len(sent) == 4 * len(app_ids)
    assert verify(engine).broken is None
