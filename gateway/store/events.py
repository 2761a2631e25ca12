"""The history: events appended to each application's hash chain (``chain.py``), and read back.

Callers own the transaction and hold the application's row lock, which serialises its chain.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from core.domain.ids import uuid7_hex

from . import tables as t
from .chain import GENESIS, EventChain, event_row
from .shared import iso, transaction_memo

# Built once: a statement built per call costs SQLAlchemy a cache key each time.
_CHAIN_HEAD = (select(t.events.c.hash).where(t.events.c.application_id == bindparam("application_id"))
               .order_by(t.events.c.id.desc()).limit(1))
INSERT_EVENTS = insert(t.events)
_STORED_EVENT_IDS = select(t.events.c.event_id).where(t.events.c.event_id.in_(bindparam("event_ids", expanding=True)))
# The newest row of each application (its chain head) and the rows of the given event ids.
_HEADS_AND_STORED = (select(t.events.c.id, t.events.c.application_id, t.events.c.event_id, t.events.c.hash)
                     .where(or_(t.events.c.id.in_(select(func.max(t.events.c.id))
                                                  .where(t.events.c.application_id.in_(
                                                      bindparam("application_ids", expanding=True)))
                                                  .group_by(t.events.c.application_id)),
                                t.events.c.event_id.in_(bindparam("event_ids", expanding=True)))))
# ``INSERT ... ON CONFLICT (event_id) DO NOTHING``: a redelivered event is recognised by the
# insert itself instead of a lookup before it.
_INSERT_EVENT_ONCE = {name: dialect.insert(t.events).on_conflict_do_nothing(index_elements=["event_id"])
                      for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))}


def chain_of(conn: Connection) -> EventChain:
    """The event chain of ``conn``'s current transaction, reading heads from the store."""
    memo = transaction_memo(conn, "event_chain")
    if "chain" not in memo:
        memo["chain"] = EventChain(
            lambda application_id: conn.execute(_CHAIN_HEAD, {"application_id": application_id}).scalar() or GENESIS)
    return memo["chain"]


class _DeferredEvents:
    """A transaction's events still to be written, and what it knows of stored event ids."""

    __slots__ = ("checked", "rows", "stored")

    def __init__(self, checked: set[str], stored: set[str]):
        self.checked, self.stored, self.rows = checked, stored, []


def _deferred(conn: Connection) -> _DeferredEvents | None:
    return transaction_memo(conn, "deferred_events").get("events")


def add_event(conn: Connection, *, application_id: str, type: str, event_id: str | None = None,
              request_id: str | None = None, step: str | None = None, status: str | None = None,
              detail: dict[str, Any] | None = None, cause: str | None = None,
              occurred_at: dt.datetime | None = None) -> bool:
    """Append one event to the application's history; False if ``event_id`` was stored before.

    In a transaction that called ``defer_events`` the row is kept and written, with the
    others in the order they were added, by ``write_deferred_events``.
    """
    deferred = _deferred(conn)
    statement = INSERT_EVENTS
    if event_id is None:
        event_id = uuid7_hex()
    elif deferred is not None:
        if event_id not in deferred.checked:  # not among the ids looked up in one go
            deferred.checked.add(event_id)
            if conn.execute(_STORED_EVENT_IDS, {"event_ids": [event_id]}).first() is not None:
                deferred.stored.add(event_id)
        if event_id in deferred.stored:
            return False  # that event id is stored (or added in this transaction) already: a redelivery
    else:
        statement = _INSERT_EVENT_ONCE[conn.dialect.name]
    chain = chain_of(conn)
    row = chain.link(event_row(event_id=event_id, application_id=application_id, type=type, request_id=request_id,
                               step=step, status=status, detail=detail, cause=cause, occurred_at=occurred_at))
    if deferred is not None:
        deferred.rows.append(row)
        deferred.stored.add(event_id)
    elif conn.execute(statement, row).rowcount == 0:
        return False  # that event id is stored already: a redelivery
    chain.advance(row)
    return True


def defer_events(conn: Connection, event_ids: Iterable[str] = (), application_ids: Iterable[str] = ()) -> None:
    """From now until ``write_deferred_events``, keep this transaction's new events in memory.

    One read finds which of ``event_ids`` (the ids the caller is about to add) are stored,
    so that ``add_event`` still answers False for those (any other id is looked up when it
    is added), and the chain head of each of ``application_ids``.  Call it once those
    applications' rows are locked (or SQLite's write lock is held), until the commit.  The
    rows are chained in the order they are added, exactly as if written at once; nothing
    may read this transaction's events in between.
    """
    ids, apps = set(event_ids), sorted(set(application_ids))
    stored: set[str] = set()
    if ids or apps:
        newest: dict[str, tuple[int, str]] = {}
        wanted = set(apps)
        for row in conn.execute(_HEADS_AND_STORED, {"application_ids": apps, "event_ids": sorted(ids)}).mappings():
            if row["event_id"] in ids:
                stored.add(row["event_id"])
            # An application's head is its newest row; a stored event of it is never newer.
            application_id = row["application_id"]
            if application_id in wanted and row["id"] > newest.get(application_id, (0, ""))[0]:
                newest[application_id] = (row["id"], row["hash"])
        heads = chain_of(conn).heads
        for application_id in apps:
            heads.setdefault(application_id, newest[application_id][1] if application_id in newest else GENESIS)
    transaction_memo(conn, "deferred_events")["events"] = _DeferredEvents(ids, stored)


def write_deferred_events(conn: Connection) -> int:
    """Write the events kept since ``defer_events``, in one statement; returns how many."""
    deferred = transaction_memo(conn, "deferred_events").pop("events", None)
    if deferred is None or not deferred.rows:
        return 0
    conn.execute(INSERT_EVENTS, deferred.rows)
    return len(deferred.rows)


def history(conn: Connection, application_id: str, *, after_id: int = 0) -> list[dict[str, Any]]:
    rows = conn.execute(select(t.events).where(t.events.c.application_id == application_id,
                                               t.events.c.id > after_id).order_by(t.events.c.id))
    return [event_document(r) for r in rows]


def event_document(r: Any) -> dict[str, Any]:
    return {
        "id": r.id, "type": r.type, "step": r.step, "request_id": r.request_id, "status": r.status,
        "cause": r.cause, "detail": r.detail, "occurred_at": iso(r.occurred_at), "recorded_at": iso(r.recorded_at),
    }
