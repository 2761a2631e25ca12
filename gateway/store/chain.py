"""The event chain: the one place that builds history rows and hash-chains them.

Each application's history is a chain: every event row holds the hash of the application's
previous row (``prev_hash``) and its own ``hash`` over ``prev_hash`` and the canonical form
of the event, so editing, deleting or reordering a row breaks the chain at the first row
affected (``satupintu audit verify``).  A new application's first events (built in memory
before its write transaction), an event added in a transaction (``events.add_event``) and a
tracker batch's deferred events (``events.defer_events``) are all chained here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any

from .shared import canonical, iso, now

GENESIS = "0" * 64  # the prev_hash of an application's first event

# The fields of an event the hash covers, with ``occurred_at`` (as ISO 8601) after them.
HASHED = ("event_id", "application_id", "request_id", "step", "type", "status", "detail", "cause")


def event_row(*, event_id: str, application_id: str, type: str, request_id: str | None = None,
              step: str | None = None, status: str | None = None, detail: dict[str, Any] | None = None,
              cause: str | None = None, occurred_at: dt.datetime | None = None) -> dict[str, Any]:
    """An ``events`` row, not yet chained (``EventChain.link`` adds ``prev_hash`` and ``hash``)."""
    recorded_at = now()
    return {"event_id": event_id, "application_id": application_id, "request_id": request_id, "step": step,
            "type": type, "status": status, "detail": detail or {}, "cause": cause,
            "occurred_at": occurred_at or recorded_at, "recorded_at": recorded_at}


def event_hash(prev: str, row: Any, occurred_at: dt.datetime) -> str:
    """SHA-256 of ``prev`` and the canonical event; ``row`` is a mapping of the ``HASHED`` fields."""
    fields = {name: row[name] for name in HASHED}
    fields["occurred_at"] = iso(occurred_at)
    return hashlib.sha256((prev + canonical(fields)).encode()).hexdigest()


class EventChain:
    """The chain heads (newest hash) of the applications one transaction appends to.

    ``head_of`` reads an application's head from the store the first time it is needed
    (a new application's is ``GENESIS``).  The caller holds the application's row lock (or
    SQLite's write lock) until the commit, so nobody else appends to these chains meanwhile.
    """

    def __init__(self, head_of: Callable[[str], str] = lambda application_id: GENESIS):
        self.heads: dict[str, str] = {}
        self.head_of = head_of

    def link(self, row: dict[str, Any]) -> dict[str, Any]:
        """Set ``row``'s ``prev_hash`` and ``hash`` after the current head; the head stays
        until ``advance`` (a row the store turns away is not part of the chain)."""
        application_id = row["application_id"]
        prev = self.heads.get(application_id)
        if prev is None:
            prev = self.heads[application_id] = self.head_of(application_id)
        row["prev_hash"] = prev
        row["hash"] = event_hash(prev, row, row["occurred_at"])
        return row

    def advance(self, row: dict[str, Any]) -> None:
        """``row`` (linked) is stored: it is its application's head now."""
        self.heads[row["application_id"]] = row["hash"]

    def append(self, row: dict[str, Any]) -> dict[str, Any]:
        """``link`` and ``advance``: for rows that are certain to be stored."""
        self.advance(self.link(row))
        return row
