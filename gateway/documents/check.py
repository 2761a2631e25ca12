"""An application's documents at submission: checked against its service, recorded in its chain.

``document_problems`` runs with the other validation (422 naming ``/documents/KIND``);
``submitted_detail`` is what the ``submitted`` event carries, so each document's SHA-256 is
in the application's tamper-evident chain; ``attach`` runs in the submission's transaction
and marks the documents used (housekeeping then keeps them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from core.domain.errors import ValidationFailed
from core.model import Service

from ..store import documents as records


def _path(kind: str) -> str:
    return "/documents/" + kind.replace("~", "~0").replace("/", "~1")


def document_problems(conn: Connection, service: Service, client_id: str, documents: Any) -> list[dict[str, str]]:
    """``{path, message}`` for every way ``documents`` ({KIND: ID}, or None) does not fit ``service``."""
    if documents is None:
        documents = {}
    if not isinstance(documents, dict):
        return [{"path": "/documents", "message": "must be an object of document kind to document id"}]
    problems = [{"path": _path(kind), "message": f"required: the id of an uploaded {kind} document"}
                for kind, rules in service.documents.items() if rules.required and kind not in documents]
    named = {}
    for kind, doc_id in documents.items():
        if kind not in service.documents:
            known = ", ".join(sorted(service.documents)) or "(none)"
            problems.append({"path": _path(kind), "message": f"service {service.id} takes no {kind!r} document; "
                                                             f"it takes: {known}"})
        elif not isinstance(doc_id, str) or len(doc_id) > 40:
            problems.append({"path": _path(kind), "message": "must be a document id from POST /v1/documents"})
        else:
            named[kind] = doc_id
    found = records.of_client(conn, named.values(), client_id) if named else {}
    for kind, doc_id in named.items():
        record, rules = found.get(doc_id), service.documents[kind]
        problem = None
        if record is None:
            problem = f"no document {doc_id} uploaded by this client"
        elif record["kind"] != kind:
            problem = f"document {doc_id} was uploaded as {record['kind']!r}, not {kind!r}"
        elif record["deleted_at"] is not None:
            problem = f"document {doc_id} was deleted (unused for 24 hours): upload it again"
        elif record["scan"] != "clean":
            problem = f"document {doc_id} is not scanned clean ({record['scan']})"
        elif record["media_type"] not in rules.media_types:
            problem = f"a {kind} document must be {' or '.join(rules.media_types)}, not {record['media_type']}"
        elif record["size"] > rules.max_bytes:
            problem = f"a {kind} document may have at most {rules.max_bytes} bytes"
        if problem:
            problems.append({"path": _path(kind), "message": problem})
    return problems


def submitted_detail(conn: Connection, client_id: str, documents: Mapping[str, str] | None) -> dict[str, Any]:
    """What the ``submitted`` event adds for the documents: ``{"documents": {KIND: {id, sha256,
    size, media_type}}}``, or ``{}`` without documents.  Call it after ``document_problems``."""
    if not documents:
        return {}
    found = records.of_client(conn, documents.values(), client_id)
    return {"documents": {kind: {name: found[doc_id][name] for name in ("id", "sha256", "size", "media_type")}
                          for kind, doc_id in sorted(documents.items())}}


def attach(conn: Connection, application_id: str, documents: Mapping[str, str] | None,
           now: dt.datetime | None = None) -> None:
    """In the submission's transaction: link the documents to the application and mark them used.

    Raises ``ValidationFailed`` (the transaction must roll back) when housekeeping deleted one
    of them since ``document_problems`` looked.
    """
    if not documents:
        return
    gone = records.attach(conn, application_id, documents, now or dt.datetime.now(dt.UTC))
    if gone:
        raise ValidationFailed([{"path": _path(kind), "message": "the document was deleted meanwhile: upload it again"}
                                for kind in gone])
