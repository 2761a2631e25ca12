"""Uploaded documents' records and the applications that use them: tables and queries.

A record outlives its content: housekeeping removes an unused document's bytes but keeps
its row, hash included, so the record still proves what was uploaded (issue 25).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Index,
    PrimaryKeyConstraint,
    String,
    Table,
    insert,
    select,
    text,
    update,
)

from .tables import metadata

documents = Table(
    "documents", metadata,
    Column("id", String(40), primary_key=True),
    Column("client_id", String(40), ForeignKey("clients.id"), nullable=False),
    Column("kind", String(63), nullable=False),
    Column("service", String(100)),  # the service whose rules the upload was checked against
    Column("filename", String(255), nullable=False),
    Column("media_type", String(100), nullable=False),  # sniffed from the bytes
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("scan", String(20), nullable=False),  # "clean"; only clean uploads are stored
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True)),  # first named by an application
    Column("deleted_at", DateTime(timezone=True)),  # content removed (or being removed)
    Column("purged_at", DateTime(timezone=True)),  # content gone from the store
    Index("ix_documents_unused", "created_at", postgresql_where=text("used_at IS NULL"), sqlite_where=text("used_at IS NULL")),
)

application_documents = Table(
    "application_documents", metadata,
    Column("application_id", String(40), ForeignKey("applications.id"), nullable=False),
    Column("kind", String(63), nullable=False),
    Column("document_id", String(40), ForeignKey("documents.id"), nullable=False),
    PrimaryKeyConstraint("application_id", "kind"),
)


def create_tables(conn: Connection) -> None:
    """The migration: both tables (checkfirst, so an interrupted upgrade can run again)."""
    documents.create(conn, checkfirst=True)
    application_documents.create(conn, checkfirst=True)


def add(conn: Connection, row: Mapping[str, Any]) -> None:
    conn.execute(insert(documents).values(**row))


def get(conn: Connection, doc_id: str, client_id: str) -> dict[str, Any] | None:
    """The record of ``doc_id`` if ``client_id`` uploaded it."""
    return conn.execute(select(documents).where(documents.c.id == doc_id, documents.c.client_id == client_id)
                        ).mappings().first()


def of_client(conn: Connection, ids: Iterable[str], client_id: str) -> dict[str, dict[str, Any]]:
    """The records among ``ids`` that ``client_id`` uploaded, by id."""
    rows = conn.execute(select(documents).where(documents.c.id.in_(list(ids)),
                                                documents.c.client_id == client_id)).mappings()
    return {row["id"]: dict(row) for row in rows}


def attach(conn: Connection, application_id: str, named: Mapping[str, str], now: dt.datetime) -> list[str]:
    """Record that the application uses ``named`` ({kind: id}); returns the kinds whose
    document was deleted meanwhile (the caller then refuses the submission)."""
    gone = []
    for kind, doc_id in named.items():
        # Conditional on the content being there: housekeeping's update is conditional on the
        # document being unused, so of two racing transactions exactly one wins.
        marked = conn.execute(update(documents).where(documents.c.id == doc_id, documents.c.deleted_at.is_(None))
                              .values(used_at=now)).rowcount
        if not marked:
            gone.append(kind)
            continue
        conn.execute(insert(application_documents).values(application_id=application_id, kind=kind,
                                                          document_id=doc_id))
    return gone


def of_application(conn: Connection, application_id: str) -> dict[str, dict[str, Any]]:
    """The documents an application uses, by kind."""
    rows = conn.execute(select(application_documents.c.kind, documents)
                        .join(documents, documents.c.id == application_documents.c.document_id)
                        .where(application_documents.c.application_id == application_id)).mappings()
    return {row["kind"]: dict(row) for row in rows}


def unused_before(conn: Connection, cutoff: dt.datetime, limit: int = 500) -> list[str]:
    """Ids of documents uploaded before ``cutoff`` that no application has used and are not deleted."""
    return list(conn.execute(select(documents.c.id).where(
        documents.c.used_at.is_(None), documents.c.deleted_at.is_(None), documents.c.created_at < cutoff,
    ).order_by(documents.c.created_at).limit(limit)).scalars())


def mark_deleted(conn: Connection, doc_id: str, now: dt.datetime) -> bool:
    """Mark an unused document deleted; False when an application took it meanwhile."""
    return bool(conn.execute(update(documents).where(
        documents.c.id == doc_id, documents.c.used_at.is_(None), documents.c.deleted_at.is_(None),
    ).values(deleted_at=now)).rowcount)


def unpurged(conn: Connection, limit: int = 500) -> list[str]:
    """Ids of deleted documents whose content may still be in the store."""
    return list(conn.execute(select(documents.c.id).where(
        documents.c.deleted_at.is_not(None), documents.c.purged_at.is_(None)).limit(limit)).scalars())


def mark_purged(conn: Connection, doc_id: str, now: dt.datetime) -> None:
    conn.execute(update(documents).where(documents.c.id == doc_id).values(purged_at=now))
