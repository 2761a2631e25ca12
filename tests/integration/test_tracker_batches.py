"""The tracker applies a batch of events in one transaction and keeps the rows it read for
the batch's later events (``tracker._Batch``).  These tests hold it to what the store would
say: a later event of the same batch sees what an earlier one wrote, an application's
``updated_at`` still moves, and a batch retried after a store error starts from the store,
not from what the failed attempt had kept.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from support import RecordingChannel

from gateway.store import tables as t


def event(request: Any, kind: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "type": kind, "status": status, "request_id": request.id,
            "application_id": request.application_id, "service": "business-startup", "step": request.step,
            "agency": request.agency, "attempt": 1, "origin": "test",
            "occurred_at": dt.datetime.now(dt.UTC).isoformat(), **extra}


def flush(engine, catalog, works: list[tuple[str, Any]]) -> RecordingChannel:
    """Run ``works`` ((application id, event dict or callable)) as one batch of ``Tracker._flush``."""
    from gateway.tracker import Tracker, apply_event
    tracker = Tracker(engine, catalog, amqp_urls=(), namespace="unused")
    for tag, (app_id, work) in enumerate(works, start=1):
        event_id = None
        if isinstance(work, dict):
            event_id = work["event_id"]
            work = (lambda ev: lambda conn: apply_event(conn, catalog, ev))(work)
        tracker._batch.append((tag, app_id, event_id, work, {}))
    channel = RecordingChannel()
    tracker._flush(channel)
    return channel


def submit(client, auth, example, reference: str) -> str:
    response = client.post("/v1/applications", json=dict(example, reference=reference), headers=auth)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def steps(engine, app_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return {r.step: r for r in conn.execute(select(t.requests).where(t.requests.c.application_id == app_id))}


def application(engine, app_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(t.applications).where(t.applications.c.id == app_id)).one()


def utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def test_later_events_of_a_batch_see_what_earlier_ones_wrote(client, auth, example, engine, catalog):
    from gateway.audit import verify
    app_id = submit(client, auth, example, "BATCH-1")
    company = steps(engine, app_id)["company"]
    first = event(company, "outcome", "approved", reference="CR-1", output={"company_number": "CR-1"})
    late = event(company, "outcome", "accepted", reference="CR-1")
    # One batch: the company's approval releases tax and permit; the late "accepted" that
    # follows must find the company approved (not queued, as it was when the batch read it).
    channel = flush(engine, catalog, [(app_id, first), (app_id, late)])
    assert channel.acks == [2] and not channel.nacks
    state = steps(engine, app_id)
    assert state["company"].status == "approved"
    assert state["tax"].status == state["permit"].status == "queued"

    # The next batch: tax, permit (released by the batch before), then social (released
    # within this batch) and a second "approved" for social under another event id.
    tax, permit = state["tax"], state["permit"]
    works = [(app_id, event(tax, "outcome", "approved", reference="TAX-1")),
             (app_id, event(permit, "callback", "approved", reference="PRM-1"))]
    flush(engine, catalog, works)
    social = steps(engine, app_id)["social"]
    assert social.status == "queued"
    before = application(engine, app_id)
    assert before.status == "in_progress"
    flush(engine, catalog, [(app_id, event(social, "outcome", "accepted", reference="SS-1")),
                            (app_id, event(social, "poll", "approved")),
                            (app_id, event(social, "poll", "approved"))])

    state = steps(engine, app_id)
    assert {s: r.status for s, r in state.items()} == dict.fromkeys(("company", "tax", "permit", "social"), "approved")
    assert state["social"].agency_reference == "SS-1"
    after = application(engine, app_id)
    assert after.status == "completed"
    assert utc(after.updated_at) >= utc(state["social"].updated_at) > utc(before.updated_at)
    with engine.connect() as conn:
        history = list(conn.execute(select(t.events).where(t.events.c.application_id == app_id)
                                    .order_by(t.events.c.id)))
        bodies = [r.body for r in conn.execute(select(t.outbox.c.body))]
    assert [r.status for r in history if r.type == "application"] == ["completed"]  # settled once
    ignored = [r.detail.get("ignored") for r in history if r.event_id in (late["event_id"],)]
    assert ignored == ["request is already approved"]
    sent = Counter(b["step"] for b in bodies if b["application_id"] == app_id and b.get("kind", "send") == "send")
    assert sent == {"company": 1, "tax": 1, "permit": 1, "social": 1}
    assert verify(engine).broken is None


def test_a_batch_touches_each_changed_application_once_with_its_last_change(client, auth, example, engine,
                                                                             catalog):
    app_ids = [submit(client, auth, example, f"TOUCH-{i}") for i in range(3)]
    created = {app_id: utc(application(engine, app_id).updated_at) for app_id in app_ids}
    companies = {app_id: steps(engine, app_id)["company"] for app_id in app_ids}
    works = [(app_id, event(companies[app_id], "attempt", "sent")) for app_id in app_ids]
    works += [(app_id, event(companies[app_id], "outcome", "accepted", reference=f"CR-{i}"))
              for i, app_id in enumerate(app_ids[:2])]
    flush(engine, catalog, works)
    for app_id in app_ids:
        app = application(engine, app_id)
        company = steps(engine, app_id)["company"]
        assert app.status == "in_progress"
        # The application's updated_at follows its last change, not the batch's first event.
        assert utc(app.updated_at) >= utc(company.updated_at) > created[app_id]
    assert [steps(engine, a)["company"].status for a in app_ids] == ["accepted", "accepted", "sent"]


def test_a_batch_retried_after_a_store_error_reads_the_store_again(client, auth, example, engine, catalog):
    from gateway.audit import verify
    app_id = submit(client, auth, example, "RETRY-1")
    company = steps(engine, app_id)["company"]
    approved = event(company, "outcome", "approved", reference="CR-9", output={"company_number": "CR-9"})
    calls = []

    def flaky(conn) -> None:
        """Fails the first attempt after the approval was applied (and kept) in it."""
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("UPDATE ...", {}, Exception("database is locked"))

    # Sorted by application id, the flaky work runs after the approval in the same batch.
    channel = flush(engine, catalog, [(app_id, approved), (app_id + "~", flaky)])
    assert len(calls) == 2 and channel.acks == [2] and not channel.nacks
    state = steps(engine, app_id)
    # Had the retry trusted the rolled-back attempt's rows, it would have taken the company
    # as approved already, ignored the event and written nothing.
    assert state["company"].status == "approved"
    assert state["company"].agency_reference == "CR-9"
    assert state["tax"].status == state["permit"].status == "queued"
    with engine.connect() as conn:
        outcome = conn.execute(select(t.events).where(t.events.c.event_id == approved["event_id"])).one()
        bodies = [r.body for r in conn.execute(select(t.outbox.c.body))]
    assert outcome.status == "approved" and "ignored" not in outcome.detail
    sent = Counter(b["step"] for b in bodies if b["application_id"] == app_id)
    assert sent == {"company": 1, "tax": 1, "permit": 1}
    assert verify(engine).broken is None
