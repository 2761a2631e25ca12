"""The upload use case, and reading a document back: what ``/v1/documents`` does, without HTTP.

An upload is staged, sealed, in a spool file while it arrives (``intake``), then scanned by
ClamAV from the spool, its type sniffed from its first bytes, and only then put in the
store and recorded.  Every refusal and every failure on the way discards the spool, and a
record is written only after the store holds the whole document (and its content removed
again if the record cannot be written), so nothing is ever stored half.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Engine

from core.domain.errors import NotFound
from core.domain.ids import uuid7_hex
from core.model import Catalog
from core.settings import Settings

from ..store import documents as records
from . import rules, sniff
from .errors import Refused, ScannerUnavailable
from .intake import receive
from .scan import Scanner
from .sealing import Sealer, document_key, unseal
from .store import DocumentStore, open_store

PUBLIC = ("id", "kind", "filename", "media_type", "size", "sha256", "scan")


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A document's metadata as the API shows it."""
    doc = {name: record[name] for name in PUBLIC}
    doc["created_at"] = record["created_at"].isoformat()
    if record.get("deleted_at"):
        doc["deleted_at"] = record["deleted_at"].isoformat()
    return doc


class Documents:
    """Uploads and reads of documents, for one gateway process."""

    def __init__(self, settings: Settings, catalog: Catalog, engine: Engine, *,
                 store: DocumentStore | None = None, scanner: Scanner | None = None):
        self.catalog, self.engine = catalog, engine
        self.key = document_key(settings)
        self.store = store or open_store(settings)
        self.scanner = scanner or Scanner.from_settings(settings)

    def upload(self, client_id: str, service_id: str | None, read: Callable[[int], bytes],
               boundary: bytes) -> dict[str, Any]:
        """Receive, scan, check and store one upload; returns its public metadata."""
        if self.scanner is None:
            raise ScannerUnavailable("no virus scanner is configured (SATUPINTU_CLAMD)")
        doc_id = "doc_" + uuid7_hex()
        largest = rules.largest(self.catalog, service_id)

        def limit_for(kind: str | None) -> int:
            return largest if kind is None else rules.kind_rules(self.catalog, service_id, kind).max_bytes

        spool = self.store.spool()
        stored = False
        try:
            got = receive(read, boundary, spool=spool, seal=lambda sink: Sealer(self.key, doc_id, sink),
                          limit_for=limit_for)
            if not got.kind:
                raise Refused(422, "validation", "/kind", "name the document's kind in a field named kind")
            kind = rules.kind_rules(self.catalog, service_id, got.kind)
            if got.size == 0:
                raise Refused(422, "validation", "/file", "the file is empty")
            if got.size > kind.max_bytes:
                raise Refused(413, "too-large", "/file", f"a {got.kind} document may have at most {kind.max_bytes} bytes")
            spool.seek(0)
            verdict = self.scanner.scan(unseal(self.key, doc_id, spool))
            if not verdict.clean:
                raise Refused(422, "infected", "/file", f"the file holds malware ({verdict.signature}); it was not kept")
            media_type = sniff.media_type(got.head)
            if media_type not in kind.media_types:
                raise Refused(415, "unsupported-media-type", "/file",
                              f"a {got.kind} document must be {' or '.join(kind.media_types)}; "
                              f"the file's bytes are {sniff.looks_like(got.head)} ({media_type})")
            self.store.put(doc_id, spool)
            stored = True
            record = {"id": doc_id, "client_id": client_id, "kind": got.kind, "service": service_id,
                      "filename": got.filename, "media_type": media_type, "size": got.size, "sha256": got.sha256,
                      "scan": "clean", "created_at": dt.datetime.now(dt.UTC)}
            with self.engine.begin() as conn:
                records.add(conn, record)
            return public(record)
        except BaseException:
            if stored:
                with contextlib.suppress(Exception):
                    self.store.delete(doc_id)
            raise
        finally:
            if not stored:
                self.store.discard(spool)

    def record(self, client_id: str, doc_id: str) -> dict[str, Any]:
        """The record of ``doc_id`` if ``client_id`` uploaded it; NotFound otherwise."""
        with self.engine.connect().execution_options(readonly=True) as conn:
            record = records.get(conn, doc_id, client_id)
        if record is None:
            raise NotFound(f"document {doc_id} not found")
        return dict(record)

    @contextlib.contextmanager
    def content(self, record: dict[str, Any]) -> Iterator[Iterator[bytes]]:
        """The plaintext of a stored document, chunk by chunk, checked as it is read."""
        with self.store.open(record["id"]) as stream:
            yield unseal(self.key, record["id"], stream)
