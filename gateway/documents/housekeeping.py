"""Housekeeping: an uploaded document that no application used within 24 hours is deleted.

Its content goes from the store; its record, with the SHA-256, stays, so what was uploaded
can still be proven.  The record is marked first (conditional on the document still being
unused, so a submission racing the sweep either gets the document or is refused) and the
content removed after; content whose removal failed is removed by the next sweep.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import Engine

from core.settings import Settings

from ..store import documents as records
from .store import DocumentStore, StoreUnavailable, open_store

log = logging.getLogger("satupintu.documents")

UNUSED_FOR = dt.timedelta(hours=24)


@dataclass(frozen=True)
class Swept:
    deleted: int  # records marked deleted now
    purged: int  # contents removed from the store now


def sweep_unused(engine: Engine, store: DocumentStore, *, now: dt.datetime | None = None,
                 unused_for: dt.timedelta = UNUSED_FOR) -> Swept:
    """Delete the content of every document uploaded ``unused_for`` ago that no application uses."""
    now = now or dt.datetime.now(dt.UTC)
    deleted = purged = 0
    with engine.connect().execution_options(readonly=True) as conn:
        candidates = records.unused_before(conn, now - unused_for)
    for doc_id in candidates:
        with engine.begin() as conn:
            deleted += records.mark_deleted(conn, doc_id, now)
    with engine.connect().execution_options(readonly=True) as conn:
        to_purge = records.unpurged(conn)
    for doc_id in to_purge:
        try:
            store.delete(doc_id)
        except StoreUnavailable as exc:
            log.warning("document %s: content not removed yet: %s", doc_id, exc)
            continue
        with engine.begin() as conn:
            records.mark_purged(conn, doc_id, now)
        purged += 1
    return Swept(deleted=deleted, purged=purged)


def sweep(settings: Settings) -> Swept:
    """``satupintu documents sweep``: the sweep with this deployment's store and database."""
    from ..store import make_engine
    engine = make_engine(settings.database_url)
    try:
        return sweep_unused(engine, open_store(settings))
    finally:
        engine.dispose()
