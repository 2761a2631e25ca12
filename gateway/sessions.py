"""Server-side sessions for the dashboard and the counter (issue 26, finding 6).

The login form exchanges an API key for a session: the cookie holds a random token, the
store only its SHA-256 with the client and the times. A session ends on logout, when its
client's key is revoked (the client is joined at every use), after ``session_idle_seconds``
without a request and after ``session_max_seconds`` in all. Before this, the cookie was the
``ops`` key itself, valid for eight hours, and still worked after logout.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import Connection, insert, select, update

from core.settings import Settings

from .clients import Client
from .store import records
from .store import tables as t

# A session's last use is written at most this often (each write is a store transaction).
TOUCH_EVERY = dt.timedelta(seconds=60)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(conn: Connection, client: Client) -> str:
    """A new session for ``client``; returns the token for the cookie (kept nowhere else)."""
    token = secrets.token_urlsafe(32)
    moment = records.now()
    conn.execute(insert(t.sessions).values(token_hash=_hash(token), client_id=client.id, created_at=moment,
                                           last_seen_at=moment))
    return token


def resume(conn: Connection, token: str, settings: Settings) -> Client | None:
    """The client of a live session, its last use brought up to date; None when it has ended."""
    row = conn.execute(
        select(t.sessions.c.token_hash, t.sessions.c.created_at, t.sessions.c.last_seen_at, t.clients)
        .join(t.clients, t.clients.c.id == t.sessions.c.client_id)
        .where(t.sessions.c.token_hash == _hash(token), t.sessions.c.ended_at.is_(None),
               t.clients.c.revoked_at.is_(None))).mappings().first()
    if row is None:
        return None
    moment = records.now()
    created, seen = _aware(row["created_at"]), _aware(row["last_seen_at"])
    if (moment - seen).total_seconds() > settings.session_idle_seconds or \
            (moment - created).total_seconds() > settings.session_max_seconds:
        end(conn, token)
        return None
    if moment - seen >= TOUCH_EVERY:
        conn.execute(update(t.sessions).where(t.sessions.c.token_hash == row["token_hash"])
                     .values(last_seen_at=moment))
    return Client(id=row["id"], name=row["name"], scopes=frozenset(row["scopes"].split()),
                  webhook_url=row["webhook_url"])


def end(conn: Connection, token: str) -> None:
    """End the session (logout); ending one that has ended already changes nothing."""
    conn.execute(update(t.sessions).where(t.sessions.c.token_hash == _hash(token), t.sessions.c.ended_at.is_(None))
                 .values(ended_at=records.now()))


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
