"""Small helpers every query module of the store uses: the time, ids, canonical JSON and a
memo that lives as long as one transaction."""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import Any

from sqlalchemy import Connection

from core.domain.ids import uuid7_hex


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands back naive datetimes, which are UTC by construction."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def new_id(prefix: str) -> str:
    """``<prefix>_`` and a time-ordered id (``core/domain/ids.py``)."""
    return f"{prefix}_{uuid7_hex()}"


# Sorted keys, no spaces, UTF-8 as is: the form hashed (request bodies, the event chain).
canonical = functools.partial(json.dumps, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def transaction_memo(conn: Connection, name: str) -> dict[Any, Any]:
    """A dict ``name`` kept on ``conn`` for its current transaction only.

    Checked by the transaction's identity: ``conn.info`` stays with the pooled database
    connection across checkouts, and the next transaction (or a retry after a rollback)
    gets an empty one.
    """
    transaction = conn.get_transaction()
    key = f"satupintu.{name}"
    kept = conn.info.get(key)
    if kept is None or kept[0] is not transaction:
        kept = conn.info[key] = (transaction, {})
    return kept[1]
