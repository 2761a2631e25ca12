"""``satupintu audit verify``: recompute every application's event hash chain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from .store import records
from .store import tables as t


def verify(engine: Engine) -> dict[str, Any] | None:
    """None when every chain is intact; else the first broken row and what is wrong with it."""
    last: dict[str, str] = {}
    with engine.connect().execution_options(readonly=True) as conn:
        for row in conn.execute(select(t.events).order_by(t.events.c.id)).yield_per(1000):
            expected_prev = last.get(row.application_id, records.GENESIS)
            if row.prev_hash != expected_prev:
                return {"id": row.id, "application_id": row.application_id,
                        "problem": "prev_hash does not match the previous row (a row was deleted or reordered)"}
            fields = {k: getattr(row, k) for k in ("event_id", "application_id", "request_id", "step", "type",
                                                    "status", "detail", "cause")}
            if records.event_hash(row.prev_hash, fields, row.occurred_at) != row.hash:
                return {"id": row.id, "application_id": row.application_id,
                        "problem": "hash does not match the row's content (the row was edited)"}
            last[row.application_id] = row.hash
    return None
