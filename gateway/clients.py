"""API clients (front offices): keys stored hashed, scopes, revocation, webhook secrets."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from adapters.egress import EgressPolicy, EgressRefused
from core.domain.errors import Conflict, NotFound
from core.settings import Settings

from .store import records
from .store import tables as t

SCOPES = ("submit", "read", "ops")

# Revocations and rotations made by this process: a verified-key cache
# (gateway/api/keycache.py) forgets what it remembered when this changes.
_changes = 0


def changes() -> int:
    """How many revocations and rotations this process has made."""
    return _changes


def _changed() -> None:
    global _changes
    _changes += 1


@dataclass(frozen=True)
class Client:
    id: str
    name: str
    scopes: frozenset[str]
    webhook_url: str | None = None


def webhook_secret(server_key: str, client_id: str, nonce: str) -> str:
    """A client's webhook secret: derived from its nonce (in the store) with the server's key (not)."""
    digest = hmac.new(server_key.encode(), f"{client_id}\n{nonce}".encode(), hashlib.sha256).hexdigest()
    return "whsec_" + digest


def webhook_secret_of(conn: Connection, name: str, server_key: str) -> str:
    """The webhook secret of the active client ``name``."""
    row = conn.execute(select(t.clients.c.id, t.clients.c.webhook_nonce).where(
        t.clients.c.name == name, t.clients.c.revoked_at.is_(None))).first()
    if row is None:
        raise NotFound(f"no active client named {name!r}")
    return webhook_secret(server_key, row.id, row.webhook_nonce)


def rotate_webhook_secret(conn: Connection, name: str, server_key: str) -> str:
    """A new webhook secret for ``name`` (the old one stops verifying at once); returns it."""
    result = conn.execute(update(t.clients).where(t.clients.c.name == name, t.clients.c.revoked_at.is_(None))
                          .values(webhook_nonce=secrets.token_hex(32)))
    if result.rowcount == 0:
        raise NotFound(f"no active client named {name!r}")
    return webhook_secret_of(conn, name, server_key)


def hash_key(key: str) -> str:
    # Keys are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def create(conn: Connection, name: str, scopes: list[str], webhook_url: str | None = None) -> tuple[Client, str]:
    """Create a client; returns it with its key, which is shown only this once."""
    bad = [s for s in scopes if s not in SCOPES]
    if bad:
        raise ValueError(f"unknown scope {bad[0]!r}; scopes are {', '.join(SCOPES)}")
    if webhook_url is not None:
        check_webhook_url(webhook_url)
    if conn.execute(select(t.clients.c.id).where(t.clients.c.name == name)).first():
        raise Conflict(f"a client named {name!r} exists already")
    key = "sp_" + secrets.token_urlsafe(32)
    client = Client(id=records.new_id("cli"), name=name, scopes=frozenset(scopes), webhook_url=webhook_url)
    conn.execute(insert(t.clients).values(id=client.id, name=name, key_hash=hash_key(key),
                                          scopes=" ".join(sorted(client.scopes)), webhook_url=webhook_url,
                                          created_at=records.now(), webhook_nonce=secrets.token_hex(32)))
    return client, key


def check_webhook_url(url: str) -> None:
    """Raise ValueError unless ``url`` may receive webhooks: http(s), at most 2000 characters,
    and not resolving to a link-local, metadata, unspecified or multicast address (the
    same egress policy the notifier enforces again at every delivery)."""
    if len(url) > 2000:
        raise ValueError("the webhook URL is longer than 2000 characters")
    try:
        EgressPolicy.from_settings(Settings.from_env()).check_url(url)
    except EgressRefused as exc:
        raise ValueError(f"webhook URL refused: {exc}") from None


def authenticate(conn: Connection, key: str) -> Client | None:
    row = conn.execute(select(t.clients).where(t.clients.c.key_hash == hash_key(key),
                                               t.clients.c.revoked_at.is_(None))).first()
    if row is None:
        return None
    return Client(id=row.id, name=row.name, scopes=frozenset(row.scopes.split()), webhook_url=row.webhook_url)


def list_all(conn: Connection) -> list[dict]:
    return [{"id": r.id, "name": r.name, "scopes": r.scopes.split(), "webhook_url": r.webhook_url,
             "created_at": records.iso(r.created_at), "revoked_at": records.iso(r.revoked_at)}
            for r in conn.execute(select(t.clients).order_by(t.clients.c.created_at))]


def revoke(conn: Connection, name: str) -> None:
    result = conn.execute(update(t.clients).where(t.clients.c.name == name, t.clients.c.revoked_at.is_(None))
                          .values(revoked_at=records.now()))
    if result.rowcount == 0:
        raise NotFound(f"no active client named {name!r}")
    _changed()


def rotate(conn: Connection, name: str) -> str:
    key = "sp_" + secrets.token_urlsafe(32)
    result = conn.execute(update(t.clients).where(t.clients.c.name == name, t.clients.c.revoked_at.is_(None))
                          .values(key_hash=hash_key(key)))
    if result.rowcount == 0:
        raise NotFound(f"no active client named {name!r}")
    _changed()
    return key
