"""The tables, as SQLAlchemy Core objects.  Their DDL lives in migrations.py."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

# A BIGINT that is still SQLite's rowid alias (INTEGER PRIMARY KEY), so it autoincrements.
Serial = BigInteger().with_variant(Integer(), "sqlite")

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True),
    Column("description", String(200), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

clients = Table(
    "clients", metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", String(200), nullable=False),  # space-separated
    Column("webhook_url", String(2000)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    # With the server's SATUPINTU_WEBHOOK_KEY, derives the client's webhook secret (schema 8).
    Column("webhook_nonce", String(64)),
)

applications = Table(
    "applications", metadata,
    Column("id", String(40), primary_key=True),
    Column("client_id", String(40), ForeignKey("clients.id"), nullable=False),
    Column("service", String(100), nullable=False),
    Column("service_version", String(40), nullable=False),
    Column("status", String(20), nullable=False),
    Column("reference", String(200)),
    Column("data", JSON, nullable=False),
    Column("idempotency_key", String(200)),
    Column("request_hash", String(64), nullable=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("due_at", DateTime(timezone=True)),
    UniqueConstraint("client_id", "idempotency_key", name="uq_applications_idempotency"),
    Index("ix_applications_client_created", "client_id", "created_at"),
    Index("ix_applications_status", "status"),
    # The operators' search by a front office's reference: the number on the citizen's
    # receipt (schema version 6). Partial: a submission without one writes no entry.
    Index("ix_applications_reference_known", "reference",
          sqlite_where=text("reference IS NOT NULL"), postgresql_where=text("reference IS NOT NULL")),
)

requests = Table(
    "requests", metadata,
    Column("id", String(40), primary_key=True),  # the stable request id sent to the agency
    Column("application_id", String(40), ForeignKey("applications.id"), nullable=False),
    Column("step", String(64), nullable=False),
    Column("agency", String(64), nullable=False),
    Column("operation", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("agency_reference", String(200)),
    Column("reason", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("output", JSON),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("application_id", "step", name="uq_requests_step"),
    # Only the references agencies gave: a request has none when it is filed, so its index
    # entry is written when the agency answers, not at the submission (schema version 5).
    Index("ix_requests_agency_reference_known", "agency_reference",
          sqlite_where=text("agency_reference IS NOT NULL"), postgresql_where=text("agency_reference IS NOT NULL")),
)

outbox = Table(
    "outbox", metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("exchange", String(200), nullable=False),  # without the namespace prefix
    Column("routing_key", String(200), nullable=False),
    Column("body", JSON, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("claimed_until", DateTime(timezone=True)),
    Column("sent_at", DateTime(timezone=True)),
    Index("ix_outbox_unsent", "sent_at", "id"),
)

events = Table(
    "events", metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),  # dedupes redelivered events
    Column("application_id", String(40), ForeignKey("applications.id"), nullable=False),
    Column("request_id", String(40)),
    Column("step", String(64)),
    Column("type", String(40), nullable=False),
    Column("status", String(20)),
    Column("detail", JSON, nullable=False),
    Column("cause", String(200)),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_events_application", "application_id", "id"),
)

dead_letters = Table(
    "dead_letters", metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("message_id", String(64), nullable=False, unique=True),
    Column("request_id", String(40), nullable=False),
    Column("application_id", String(40), nullable=False),
    Column("agency", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("replayed_at", DateTime(timezone=True)),
    Index("ix_dead_letters_open", "replayed_at", "id"),
)

callback_signatures = Table(
    "callback_signatures", metadata,
    Column("signature", String(128), primary_key=True),
    Column("agency", String(64), nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
)

# Dashboard and counter sessions (schema 9): the cookie holds a random token, the store its
# SHA-256; ended on logout, on the key's revocation (joined at every use) and after idle time.
sessions = Table(
    "sessions", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("client_id", String(40), ForeignKey("clients.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Index("ix_sessions_client", "client_id"),
)

webhooks = Table(
    "webhooks", metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("client_id", String(40), ForeignKey("clients.id"), nullable=False),
    Column("application_id", String(40), ForeignKey("applications.id"), nullable=False),
    Column("url", String(2000), nullable=False),
    Column("body", JSON, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("claimed_until", DateTime(timezone=True)),
    Column("delivered_at", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_webhooks_due", "delivered_at", "next_attempt_at"),
)

# The per-client token bucket of the API rate limit (gateway/api/ratelimit.py): one row
# per client, updated by one UPSERT per request, shared by every gateway process.
rate_limits = Table(
    "rate_limits", metadata,
    Column("client_id", String(40), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated_at", Float, nullable=False),  # unix seconds
    Column("allowed", Integer, nullable=False),  # tokens granted by the last statement (0 = refused)
)

# The keyed hashes (``core/masking.nik_hashes``) of the NIKs in each application's data, so
# that operators find an application by NIK with one indexed lookup and no plaintext NIK
# stored or compared.  Written with the application at submission; filled for older
# applications by migration 4 and rebuilt under a new key by ``satupintu db rehash-niks``.
application_niks = Table(
    "application_niks", metadata,
    Column("application_id", String(40), ForeignKey("applications.id", ondelete="CASCADE"), nullable=False),
    Column("nik_hash", String(64), nullable=False),
    PrimaryKeyConstraint("application_id", "nik_hash", name="pk_application_niks"),
    Index("ix_application_niks_hash", "nik_hash"),
)
