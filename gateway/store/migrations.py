"""Versioned schema migrations: ``satupintu db upgrade`` applies the missing ones in order.

Each migration is a function of an open transaction, committed with its version row; one
that must fill rows for what is already stored has a back-fill too (``BACKFILLS``).  The
schema is never created implicitly at start-up: a process that finds the store behind
refuses to start and says which command to run.  Migrations stay compatible one version
back (add, then use, then drop), so old and new processes can run side by side during an
upgrade.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable

from sqlalchemy import Connection, Engine, insert, inspect, select, text

from core.domain.errors import StoreError

from . import documents, nik_index, tables


def _initial(conn: Connection) -> None:
    for table in (tables.clients, tables.applications, tables.requests, tables.outbox, tables.events,
                  tables.dead_letters, tables.callback_signatures):
        table.create(conn)


def _webhooks(conn: Connection) -> None:
    tables.webhooks.create(conn)


def _rate_limits(conn: Connection) -> None:
    tables.rate_limits.create(conn)


def _application_niks(conn: Connection) -> None:
    # checkfirst: a back-fill interrupted before version 4 was recorded left the table behind.
    tables.application_niks.create(conn, checkfirst=True)


def _backfill_application_niks(engine: Engine) -> None:
    from core.masking import nik_hashes  # pure functions; the same hash the gateway writes
    nik_index.rebuild(engine, nik_hashes)


def _known_agency_references(conn: Connection) -> None:
    # The index on (agency, agency_reference) served no query (the operators' search asks for
    # the reference alone) and took 3 index entries per submission, all NULL. Dropping an
    # index and adding another keeps the processes of version 4 running meanwhile.
    conn.execute(text("DROP INDEX IF EXISTS ix_requests_agency_reference"))
    next(i for i in tables.requests.indexes if i.name == "ix_requests_agency_reference_known").create(
        conn, checkfirst=True)


def _front_office_references(conn: Connection) -> None:
    # The operators' search by the front office's reference read every application.
    next(i for i in tables.applications.indexes if i.name == "ix_applications_reference_known").create(
        conn, checkfirst=True)


def _webhook_nonces(conn: Connection) -> None:
    # The webhook secret was the SHA-256 of the client's key, which is exactly clients.key_hash:
    # a read of the store was enough to sign webhooks. Each client now gets a nonce of its own,
    # and the secret is derived from it with a server key the store does not hold; receivers
    # take the new secret from `satupintu clients webhook-secret NAME` (docs/security.md).
    if "webhook_nonce" not in {c["name"] for c in inspect(conn).get_columns("clients")}:
        conn.execute(text("ALTER TABLE clients ADD COLUMN webhook_nonce VARCHAR(64)"))
    for client_id in conn.execute(select(tables.clients.c.id).where(tables.clients.c.webhook_nonce.is_(None))).scalars():
        conn.execute(tables.clients.update().where(tables.clients.c.id == client_id)
                     .values(webhook_nonce=secrets.token_hex(32)))


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "clients, applications, requests, outbox, events, dead letters, callback signatures", _initial),
    (2, "webhook deliveries", _webhooks),
    (3, "per-client rate limit buckets", _rate_limits),
    (4, "application NIK hashes for the operators' search", _application_niks),
    (5, "agency references indexed once known, by themselves", _known_agency_references),
    (6, "front-office references indexed for the operators' search", _front_office_references),
    (7, "uploaded documents and the applications that use them", documents.create_tables),
    (8, "a webhook secret of each client's own, derived with a server key", _webhook_nonces),
    (9, "server-side sessions of the dashboard and the counter", lambda conn: tables.sessions.create(conn)),
]

# Rows a migration fills after its DDL has committed, in short transactions of their own
# (``nik_index``): one transaction for a million rows would hold SQLite's write lock, and on
# PostgreSQL the lock the new foreign key takes on ``applications``, until it ended --
# stopping every gateway and tracker still running.  The version is recorded once the
# back-fill is done, so an interrupted one is simply run again by the next ``db upgrade``.
BACKFILLS: dict[int, Callable[[Engine], None]] = {4: _backfill_application_niks}

LATEST = MIGRATIONS[-1][0]


def current_version(engine: Engine) -> int:
    with engine.connect().execution_options(readonly=True) as conn:
        if not inspect(conn).has_table("schema_version"):
            return 0
        return conn.execute(select(tables.schema_version.c.version).order_by(
            tables.schema_version.c.version.desc()).limit(1)).scalar() or 0


def upgrade(engine: Engine) -> list[int]:
    """Apply every migration not applied yet, each with its version in one transaction (a
    back-fill in batches between the two); returns the versions applied."""
    applied = []
    with engine.begin() as conn:
        if not inspect(conn).has_table("schema_version"):
            tables.schema_version.create(conn)
        done = set(conn.execute(select(tables.schema_version.c.version)).scalars())
    for version, description, migrate in MIGRATIONS:
        if version in done:
            continue
        backfill = BACKFILLS.get(version)
        with engine.begin() as conn:
            migrate(conn)
            if backfill is None:
                _record(conn, version, description)
        if backfill is not None:
            backfill(engine)
            with engine.begin() as conn:
                _record(conn, version, description)
        applied.append(version)
    return applied


def _record(conn: Connection, version: int, description: str) -> None:
    conn.execute(insert(tables.schema_version).values(
        version=version, description=description, applied_at=dt.datetime.now(dt.UTC)))


def require_current(engine: Engine) -> None:
    """Refuse to run against a store that is not migrated to this code's version."""
    version = current_version(engine)
    if version < LATEST:
        raise StoreError(f"the store is at schema version {version}, this code needs {LATEST}: "
                         f"run `satupintu db upgrade`")
