"""The transactional outbox: messages written in the transaction that decided them, claimed
and marked sent by the relay once the broker confirmed them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, or_, select, update

from . import tables as t
from .shared import now, transaction_memo

# PostgreSQL: each outbox write notifies this channel at commit, waking the relay at once.
OUTBOX_CHANNEL = "satupintu_outbox"

INSERT_OUTBOX = insert(t.outbox)


def enqueue(conn: Connection, *, exchange: str, routing_key: str, body: dict[str, Any],
            headers: dict[str, Any]) -> None:
    conn.execute(INSERT_OUTBOX, {"exchange": exchange, "routing_key": routing_key, "body": body,
                                 "headers": headers, "created_at": now()})
    notify_outbox(conn)


def notify_outbox(conn: Connection) -> None:
    """On PostgreSQL, wake the relay when this transaction commits: one NOTIFY per transaction
    (PostgreSQL folds several into one anyway)."""
    if conn.dialect.name == "postgresql":
        memo = transaction_memo(conn, "outbox_notify")
        if not memo.get("sent"):
            conn.exec_driver_sql(f"NOTIFY {OUTBOX_CHANNEL}")
            memo["sent"] = True


# The relay's statements, built once (the relay runs them many times a second); ``ids`` expand.
_OUTBOX_IDS = bindparam("ids", expanding=True)
_CLAIMABLE_OUTBOX = (select(t.outbox.c.id, t.outbox.c.claimed_until)
                     .where(t.outbox.c.sent_at.is_(None),
                            or_(t.outbox.c.claimed_until.is_(None), t.outbox.c.claimed_until < bindparam("moment")))
                     .order_by(t.outbox.c.id).limit(bindparam("limit")).with_for_update(skip_locked=True))
_CLAIM_OUTBOX = update(t.outbox).where(t.outbox.c.id.in_(_OUTBOX_IDS)).values(claimed_until=bindparam("until"))
_CLAIMED_OUTBOX = select(t.outbox).where(t.outbox.c.id.in_(_OUTBOX_IDS)).order_by(t.outbox.c.id)
_MARK_SENT = update(t.outbox).where(t.outbox.c.id.in_(_OUTBOX_IDS)).values(sent_at=bindparam("sent_at"))


def claim_outbox(conn: Connection, *, limit: int, lease: dt.timedelta,
                 reclaimed: set[int] | None = None) -> list[Any]:
    """Claim up to ``limit`` unsent rows for ``lease``; rows of a crashed relay come back.

    On PostgreSQL ``FOR UPDATE SKIP LOCKED`` keeps concurrent relays off each other's rows.
    The ids of rows claimed before (so perhaps published already) are added to ``reclaimed``.
    """
    moment = now()
    claimable = conn.execute(_CLAIMABLE_OUTBOX, {"moment": moment, "limit": limit}).all()
    ids = [row.id for row in claimable]
    if not ids:
        return []
    if reclaimed is not None:
        reclaimed.update(row.id for row in claimable if row.claimed_until is not None)
    conn.execute(_CLAIM_OUTBOX, {"ids": ids, "until": moment + lease})
    return conn.execute(_CLAIMED_OUTBOX, {"ids": ids}).all()


def mark_sent(conn: Connection, ids: list[int]) -> None:
    if ids:
        conn.execute(_MARK_SENT, {"ids": ids, "sent_at": now()})


def oldest_unsent_age(conn: Connection) -> float:
    oldest = conn.execute(select(func.min(t.outbox.c.created_at)).where(t.outbox.c.sent_at.is_(None))).scalar()
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.UTC)
    return max(0.0, (now() - oldest).total_seconds())
