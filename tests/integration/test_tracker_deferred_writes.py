"""The tracker's batch writes what it changed at its end (``tracker_batch.EventBatch``): request
and application rows once each, history rows in one statement.  These tests hold it to what
writing at once would give: later events of a batch see earlier writes, a rollback loses
nothing and the retry reads the store again, redeliveries change nothing, the hash chain
stays intact and in order -- and a batch costs a handful of statements, not a few per event.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from test_tracker_batches import application, event, flush, steps, submit

from gateway.store import records
from gateway.store import tables as t


def history(engine, app_id: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(t.events).where(t.events.c.application_id == app_id)
                                 .order_by(t.events.c.id)))


def test_a_step_released_in_a_batch_takes_its_own_outcome_in_the_same_batch(client, auth, example, engine,
                                                                            catalog):
    from gateway.audit import verify
    app_id = submit(client, auth, example, "SAME-BATCH-1")
    state = steps(engine, app_id)
    company, tax, permit = state["company"], state["tax"], state["permit"]
    assert tax.status == permit.status == "pending"
    before = len(history(engine, app_id))
    approved = event(company, "outcome", "approved", reference="CR-1", output={"company_number": "CR-1"})
    tax_approved = event(tax, "outcome", "approved", reference="TAX-1")
    permit_accepted = event(permit, "callback", "accepted", reference="PRM-1")
    # Tax and permit were pending when the batch read them; the company's approval queues
    # them, and their own outcomes later in the batch must find them queued.
    flush(engine, catalog, [(app_id, approved), (app_id, tax_approved), (app_id, permit_accepted)])

    state = steps(engine, app_id)
    assert {s: r.status for s, r in state.items()} == {"company": "approved", "tax": "approved",
                                                        "permit": "accepted", "social": "pending"}
    assert state["tax"].agency_reference == "TAX-1" and state["permit"].agency_reference == "PRM-1"
    assert state["company"].output == {"company_number": "CR-1"}
    assert state["tax"].output is None  # never set: not written as JSON null either
    rows = history(engine, app_id)
    # The history in the order the batch applied the events, not grouped by table or statement.
    applied = [(r.type, r.step, r.status) for r in rows[before:]]
    assert applied == [("outcome", "company", "approved"), ("status", "tax", "queued"),
                       ("status", "permit", "queued"), ("outcome", "tax", "approved"),
                       ("callback", "permit", "accepted")]
    assert all(r.prev_hash == p.hash for p, r in zip(rows, rows[1:], strict=False))
    assert verify(engine).broken is None


def test_a_rollback_while_writing_the_batch_loses_nothing_and_the_retry_reads_again(
        client, auth, example, engine, catalog, monkeypatch: pytest.MonkeyPatch):
    from gateway.audit import verify
    app_id = submit(client, auth, example, "ROLLBACK-1")
    company = steps(engine, app_id)["company"]
    before = len(history(engine, app_id))
    approved = event(company, "outcome", "approved", reference="CR-7", output={"company_number": "CR-7"})
    write = records.write_deferred_events
    calls = []

    def failing_once(conn) -> int:
        """The store fails while the batch writes its rows, after every event was applied in memory."""
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("INSERT INTO events ...", {}, Exception("database is locked"))
        return write(conn)
    monkeypatch.setattr(records, "write_deferred_events", failing_once)
    channel = flush(engine, catalog, [(app_id, approved)])
    assert len(calls) == 2 and channel.acks == [1] and not channel.nacks

    state = steps(engine, app_id)
    # A retry that trusted the failed attempt's copies would find the company approved and
    # write nothing; it read the store again and applied the event.
    assert state["company"].status == "approved" and state["company"].agency_reference == "CR-7"
    assert state["tax"].status == state["permit"].status == "queued"
    rows = history(engine, app_id)[before:]
    assert [(r.type, r.step) for r in rows] == [("outcome", "company"), ("status", "tax"), ("status", "permit")]
    assert rows[0].event_id == approved["event_id"] and "ignored" not in rows[0].detail
    with engine.connect() as conn:
        sent = [b["step"] for b in conn.execute(select(t.outbox.c.body)).scalars() if b["application_id"] == app_id]
    assert sorted(sent) == ["company", "permit", "tax"]  # each dispatched once
    assert verify(engine).broken is None


def test_redelivered_events_change_nothing_in_a_later_batch_or_the_same_one(client, auth, example, engine,
                                                                            catalog):
    from gateway.audit import verify
    from gateway.tracker import apply_event
    app_id = submit(client, auth, example, "REDELIVER-1")
    company = steps(engine, app_id)["company"]
    accepted = event(company, "outcome", "accepted", reference="CR-3")
    flush(engine, catalog, [(app_id, accepted), (app_id, dict(accepted))])  # twice in one batch
    count = len(history(engine, app_id))
    changed_at = steps(engine, app_id)["company"].updated_at
    results = []
    # Again in a later batch: once with its id looked up up front, once as work whose id the
    # batch does not know (looked up when the event is added).
    flush(engine, catalog, [(app_id, dict(accepted)),
                            (app_id, lambda conn: results.append(apply_event(conn, catalog, dict(accepted))))])
    assert results == [False]
    assert len(history(engine, app_id)) == count
    assert steps(engine, app_id)["company"].updated_at == changed_at
    assert [r.event_id for r in history(engine, app_id)].count(accepted["event_id"]) == 1
    assert verify(engine).broken is None


def test_a_batch_costs_a_few_statements_whatever_its_number_of_events(client, auth, example, engine, catalog):
    app_ids = [submit(client, auth, example, f"COUNT-{i}") for i in range(10)]
    companies = [steps(engine, app_id)["company"] for app_id in app_ids]
    works = []
    for i, (app_id, company) in enumerate(zip(app_ids, companies, strict=True)):
        works += [(app_id, event(company, "attempt", "sent")),
                  (app_id, event(company, "outcome", "accepted", reference=f"CR-{i}")),
                  (app_id, event(company, "poll", "accepted"))]
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        if statement.split(None, 1)[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK"):
            statements.append(statement)
    sa_event.listen(engine, "before_cursor_execute", count)
    try:
        flush(engine, catalog, works)
    finally:
        sa_event.remove(engine, "before_cursor_execute", count)
    assert [steps(engine, a)["company"].status for a in app_ids] == ["accepted"] * 10
    assert all(application(engine, a).status == "in_progress" for a in app_ids)
    # Lock the applications, read their requests, chain heads and stored event ids; write
    # requests, applications, events: the same for 30 events as for 3 (it was ~4 per event).
    assert len(statements) <= 8, statements


def test_webhook_deliveries_of_a_batch_are_written_with_it_in_order(client, auth, api_key, example, engine,
                                                                    catalog):
    from sqlalchemy import update
    with engine.begin() as conn:  # set directly: registering a URL would resolve its host
        conn.execute(update(t.clients).values(webhook_url="https://client.example/hooks"))
    app_ids = [submit(client, auth, example, f"HOOK-{i}") for i in range(2)]
    with engine.begin() as conn:
        conn.execute(t.webhooks.delete())
    works = []
    for app_id in app_ids:
        company = steps(engine, app_id)["company"]
        works += [(app_id, event(company, "outcome", "rejected", reason="name taken")),
                  (app_id, event(company, "outcome", "approved"))]  # late: ignored
    flush(engine, catalog, works)
    with engine.connect() as conn:
        hooks = list(conn.execute(select(t.webhooks).order_by(t.webhooks.c.id)))
    assert [(h.application_id, h.body["status"]) for h in hooks] == [(a, "rejected") for a in sorted(app_ids)]
    assert all(application(engine, a).status == "rejected" for a in app_ids)
