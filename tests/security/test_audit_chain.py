"""The tamper-evident history: `satupintu audit verify` recomputes the per-application
hash chains and names the first broken row; an anchor kept outside catches lost tails."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select, update

from gateway import audit
from gateway.cli import main
from gateway.store import tables as t


def event_ids(engine, app_id):
    with engine.connect() as conn:
        return list(conn.execute(select(t.events.c.id).where(t.events.c.application_id == app_id)
                                 .order_by(t.events.c.id)).scalars())


def test_an_untouched_chain_verifies(client, auth, example, engine, capsys):
    for i in range(3):
        client.post("/v1/applications", json=dict(example, reference=f"R{i}"), headers=auth)
    assert main(["audit", "verify"]) == 0
    assert "audit chain intact" in capsys.readouterr().out


def test_editing_a_row_directly_is_found(submitted, engine, capsys):
    first, second = event_ids(engine, submitted["id"])[:2]
    with engine.begin() as conn:
        conn.execute(update(t.events).where(t.events.c.id == second).values(status="approved"))
    assert main(["audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert f"event row {second} " in err and submitted["id"] in err and "edited" in err


def test_editing_a_rows_detail_is_found(submitted, engine):
    row = event_ids(engine, submitted["id"])[0]
    with engine.begin() as conn:
        conn.execute(update(t.events).where(t.events.c.id == row).values(detail={"service": "forged"}))
    report = audit.verify(engine)
    assert report.broken["id"] == row


def test_deleting_a_row_breaks_the_next_one(submitted, engine, capsys):
    ids = event_ids(engine, submitted["id"])
    assert len(ids) >= 2
    with engine.begin() as conn:
        conn.execute(delete(t.events).where(t.events.c.id == ids[0]))
    assert main(["audit", "verify"]) == 1
    assert f"event row {ids[1]} " in capsys.readouterr().err


def test_rewriting_the_hashes_after_an_edit_is_found_too(submitted, engine):
    """An edit that also recomputes the row's own hash still breaks the next row's prev_hash."""
    from gateway.store import records
    ids = event_ids(engine, submitted["id"])
    with engine.begin() as conn:
        row = conn.execute(select(t.events).where(t.events.c.id == ids[0])).one()
        fields = {k: getattr(row, k) for k in ("event_id", "application_id", "request_id", "step", "type",
                                                "status", "detail", "cause")}
        fields["cause"] = "forged"
        conn.execute(update(t.events).where(t.events.c.id == ids[0]).values(
            cause="forged", hash=records.event_hash(row.prev_hash, fields, row.occurred_at)))
    assert audit.verify(engine).broken["id"] == ids[1]


def test_an_anchor_catches_the_loss_of_the_newest_rows(submitted, engine, capsys):
    # Age the rows past the settle window so that the anchor covers them.
    with engine.begin() as conn:
        conn.execute(update(t.events).values(recorded_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)))
    assert main(["audit", "verify"]) == 0
    anchor = next(line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("anchor "))
    assert main(["audit", "verify", "--anchor", anchor]) == 0
    last = event_ids(engine, submitted["id"])[-1]
    with engine.begin() as conn:
        conn.execute(delete(t.events).where(t.events.c.id == last))
    assert main(["audit", "verify"]) == 0  # a chain without its tail is still a valid chain...
    capsys.readouterr()
    assert main(["audit", "verify", "--anchor", anchor]) == 1  # ...but no longer the anchored one
    assert "anchor" in capsys.readouterr().err


def test_a_malformed_anchor_is_a_usage_error(engine):
    assert main(["audit", "verify", "--anchor", "nonsense"]) == 2
