"""``satupintu audit verify``: recompute every application's event hash chain.

Each event row holds the hash of its application's previous row (``store/chain.py``),
so editing a row, deleting one from the middle, or reordering rows breaks the chain at
the first row affected.  The chain is per application, not global, so trackers applying
events of different applications never wait on one another.

What a per-application chain cannot show by itself is the loss of an application's
*newest* rows (or of all its rows).  For that, ``verify`` also computes an **anchor**: a
digest over every application's chain head up to a given event id.  An operator keeps
the anchor printed by one run somewhere the database's writers cannot reach (a ticket,
a WORM bucket, a signed mail); ``audit verify --anchor ID:DIGEST`` later recomputes the
heads as of that row and fails if any row up to it was removed or changed since.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, func, select

from .store import tables as t
from .store.chain import GENESIS, event_hash
from .store.shared import now

# Rows newer than this are left out of a new anchor: on PostgreSQL a transaction that took
# a lower id may still be committing, and would then appear "inside" an anchor later.
# SQLite has one writer at a time, so there every committed row is settled at once.
ANCHOR_SETTLE = dt.timedelta(seconds=60)


def settle_window(engine: Engine) -> dt.timedelta:
    """How old a row must be to go into an anchor on this store."""
    return dt.timedelta(0) if engine.dialect.name == "sqlite" else ANCHOR_SETTLE


@dataclass
class Report:
    """The outcome of one verification."""

    broken: dict[str, Any] | None = None  # the first broken row: id, application_id, problem
    events: int = 0
    applications: int = 0
    anchor: str | None = None  # "<event id>:<digest>", to be kept outside the database
    # Rows too young for the anchor, and when the youngest of them will be old enough.
    left_out: int = 0
    settled_at: dt.datetime | None = None
    heads: dict[str, tuple[int, str]] = field(default_factory=dict, repr=False)


def anchor_digest(heads: dict[str, tuple[int, str]]) -> str:
    """SHA-256 over ``application_id count head`` lines, sorted by application."""
    lines = "".join(f"{app} {count} {head}\n" for app, (count, head) in sorted(heads.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def verify(engine: Engine, *, anchor: str | None = None) -> Report:
    """Recompute every chain; with ``anchor`` (``ID:DIGEST``) also check the heads as of row ID."""
    anchor_id: int | None = None
    if anchor is not None:
        text_id, _, expected = anchor.partition(":")
        if not text_id.isdigit() or len(expected) != 64:
            raise ValueError("an anchor looks like <event id>:<64 hex digits>, as `audit verify` printed it")
        anchor_id = int(text_id)
    report = Report()
    last: dict[str, tuple[int, str]] = {}
    at_check: dict[str, tuple[int, str]] = {}  # heads as of the given anchor's row
    at_settled: dict[str, tuple[int, str]] = {}  # heads as of the newest settled row (the new anchor)
    window = settle_window(engine)
    with engine.connect().execution_options(readonly=True) as conn:
        newest = select(func.max(t.events.c.id))
        if window:
            newest = newest.where(t.events.c.recorded_at < now() - window)
        settled = conn.execute(newest).scalar() or 0
        for row in conn.execute(select(t.events).order_by(t.events.c.id)).yield_per(1000).mappings():
            application_id = row["application_id"]
            count, expected_prev = last.get(application_id, (0, GENESIS))
            if row["prev_hash"] != expected_prev:
                report.broken = {"id": row["id"], "application_id": application_id,
                                 "problem": "prev_hash does not match the previous row of this application "
                                            "(a row before it was deleted, edited or reordered)"}
                return report
            if event_hash(row["prev_hash"], row, row["occurred_at"]) != row["hash"]:
                report.broken = {"id": row["id"], "application_id": application_id,
                                 "problem": "hash does not match the row's content (the row was edited)"}
                return report
            last[application_id] = (count + 1, row["hash"])
            report.events += 1
            if anchor_id is not None and row["id"] <= anchor_id:
                at_check[application_id] = last[application_id]
            if row["id"] <= settled:
                at_settled[application_id] = last[application_id]
            else:
                report.left_out += 1
                ready = row["recorded_at"] + window
                report.settled_at = max(report.settled_at or ready, ready)
    report.applications, report.heads = len(last), last
    if anchor_id is not None and anchor_digest(at_check) != expected:
        report.broken = {"id": anchor_id, "application_id": None,
                         "problem": f"the chains up to event row {anchor_id} no longer match the anchor "
                                    f"(rows up to it were deleted or rewritten)"}
        return report
    if settled:
        report.anchor = f"{settled}:{anchor_digest(at_settled)}"
    return report
