"""Reads and writes of applications and requests, as small functions over an open connection,
and the one import for the store's query modules (``events``, ``outbox``, ``chain``, ``shared``).

Callers own the transaction (``with engine.begin() as conn``), so one request or one
batch of events is applied all-or-nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, and_, bindparam, or_, select, update

from . import tables as t
from .chain import GENESIS, EventChain, event_hash, event_row
from .events import (
    INSERT_EVENTS,
    add_event,
    defer_events,
    event_document,
    history,
    write_deferred_events,
)
from .outbox import OUTBOX_CHANNEL, claim_outbox, enqueue, mark_sent, notify_outbox, oldest_unsent_age
from .shared import canonical, iso, new_id, now, transaction_memo

__all__ = [
    "GENESIS", "INSERT_EVENTS", "OUTBOX_CHANNEL", "SET_APPLICATION_STATUS", "UPDATE_REQUEST", "EventChain",
    "add_event", "application_document", "application_row", "canonical", "claim_outbox", "defer_events",
    "enqueue", "event_document", "event_hash", "event_row", "history", "iso", "list_applications", "mark_sent",
    "new_id", "notify_outbox", "now", "oldest_unsent_age", "request_rows", "transaction_memo",
    "write_deferred_events",
]

_APPLICATION = select(t.applications).where(t.applications.c.id == bindparam("application_id"))
_APPLICATION_LOCKED = _APPLICATION.with_for_update()
_REQUESTS = (select(t.requests).where(t.requests.c.application_id == bindparam("application_id"))
             .order_by(t.requests.c.step))

# Prebuilt updates the tracker and the workflow share (a bindparam may not share a name with
# a column the statement sets).  ``UPDATE_REQUEST`` sets the columns its parameters name;
# both take a list of parameter sets as well (one ``executemany``).
UPDATE_REQUEST = update(t.requests).where(t.requests.c.id == bindparam("request_row_id"))
SET_APPLICATION_STATUS = (update(t.applications).where(t.applications.c.id == bindparam("app_id"))
                          .values(status=bindparam("new_status"), updated_at=bindparam("moment")))


def application_row(conn: Connection, application_id: str, *, client_id: str | None = None,
                    lock: bool = False) -> Any:
    if client_id is None:  # the tracker's and the workflow's read: built once
        return conn.execute(_APPLICATION_LOCKED if lock else _APPLICATION, {"application_id": application_id}).first()
    query = select(t.applications).where(t.applications.c.id == application_id,
                                         t.applications.c.client_id == client_id)
    if lock:
        query = query.with_for_update()
    return conn.execute(query).first()


def request_rows(conn: Connection, application_id: str) -> list[Any]:
    return list(conn.execute(_REQUESTS, {"application_id": application_id}))


def application_document(app: Any, requests: Iterable[Any], *, order: Iterable[str] = ()) -> dict[str, Any]:
    """The application document of DESIGN §3."""
    rank = {step: i for i, step in enumerate(order)}
    items = sorted(requests, key=lambda r: (rank.get(r.step, len(rank)), r.step))
    overdue = bool(app.due_at is not None and app.status == "in_progress"
                   and (app.due_at if app.due_at.tzinfo else app.due_at.replace(tzinfo=dt.UTC)) < now())
    return {
        "id": app.id,
        "service": app.service,
        "status": app.status,
        "reference": app.reference,
        "created_at": iso(app.created_at),
        "updated_at": iso(app.updated_at),
        "due_at": iso(app.due_at),
        "overdue": overdue,
        "requests": [
            {
                "step": r.step,
                "agency": r.agency,
                "request_id": r.id,
                "status": r.status,
                "agency_reference": r.agency_reference,
                "reason": r.reason,
                "attempts": r.attempts,
                "updated_at": iso(r.updated_at),
            }
            for r in items
        ],
    }


def list_applications(conn: Connection, client_id: str, *, status: str | None, service: str | None,
                      after: tuple[str, str] | None, limit: int) -> list[Any]:
    """The client's applications, newest first; ``after`` is the (created_at iso, id) cursor."""
    query = select(t.applications).where(t.applications.c.client_id == client_id)
    if status:
        query = query.where(t.applications.c.status == status)
    if service:
        query = query.where(t.applications.c.service == service)
    if after:
        created = dt.datetime.fromisoformat(after[0].replace("Z", "+00:00"))
        if conn.dialect.name == "sqlite":
            created = created.replace(tzinfo=None)
        query = query.where(or_(t.applications.c.created_at < created,
                                and_(t.applications.c.created_at == created, t.applications.c.id < after[1])))
    query = query.order_by(t.applications.c.created_at.desc(), t.applications.c.id.desc()).limit(limit)
    return list(conn.execute(query))
