"""/v1/documents: upload a document (streamed, scanned, sealed), read its metadata and its bytes.

A document belongs to the client that uploaded it: any other client is told it does not
exist (404), as with applications.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

from flask import Blueprint, Response, current_app, json, request

from ..documents import rules
from ..documents.errors import DocumentMissing, Refused, ScannerUnavailable, StoreUnavailable
from ..documents.service import Documents, public
from .context import ctx, current_client, require
from .problems import TYPES, Problem, problem_response

bp = Blueprint("documents", __name__, url_prefix="/v1")

_ID = re.compile(r"doc_[0-9a-f]{32}")
FORM_SLACK = 64 * 1024  # what the multipart framing and the kind field may add to the file
RETRY_AFTER = "30"


def documents() -> Documents:
    """This app's ``Documents``, made on first use (the scanner's and S3's clients load lazily)."""
    found = current_app.extensions.get("satupintu.documents")
    if found is None:
        c = ctx()
        found = current_app.extensions["satupintu.documents"] = Documents(c.settings, c.catalog, c.engine)
    return found


@bp.errorhandler(Refused)
def _refused(exc: Refused) -> Response:
    return problem_response(exc.status, _TITLES.get(exc.status, "Refused"), exc.message, type=TYPES + exc.reason,
                            errors=[{"path": exc.path, "message": exc.message}])


@bp.errorhandler(ScannerUnavailable)
@bp.errorhandler(StoreUnavailable)
def _unavailable(exc: Exception) -> Response:
    current_app.logger.warning("document upload or read refused: %s", exc)
    what = "virus scanner" if isinstance(exc, ScannerUnavailable) else "document store"
    return problem_response(503, "Service Unavailable",
                            f"the {what} is not available; nothing was stored, try again later",
                            type=TYPES + "unavailable", headers={"Retry-After": RETRY_AFTER})


_TITLES = {400: "Bad Request", 413: "Content Too Large", 415: "Unsupported Media Type", 422: "Validation failed"}


@bp.post("/documents")
@require("submit")
def upload() -> Response:
    service_id = request.args.get("service")
    if request.mimetype != "multipart/form-data" or not request.mimetype_params.get("boundary"):
        raise Problem(415, "Unsupported Media Type", "send the document as multipart/form-data (fields file, kind)",
                      type=TYPES + "unsupported-media-type")
    docs = documents()
    limit = rules.largest(docs.catalog, service_id) + FORM_SLACK
    if request.content_length is not None and request.content_length > limit:
        raise Refused(413, "too-large", "/file", f"the body is larger than the largest document allowed ({limit} bytes)")
    request.max_content_length = limit  # instead of the JSON bodies' MAX_CONTENT_LENGTH
    doc = docs.upload(current_client().id, service_id, request.stream.read,
                      request.mimetype_params["boundary"].encode("latin-1"))
    response = Response(json.dumps(doc), status=201, mimetype="application/json")
    response.headers["Location"] = f"{request.script_root}{bp.url_prefix}/documents/{doc['id']}"
    return response


def _owned(doc_id: str) -> dict:
    if not _ID.fullmatch(doc_id):
        raise Problem(404, "Not found", "no such document", type=TYPES + "not-found")
    return documents().record(current_client().id, doc_id)


@bp.get("/documents/<doc_id>")
@require("read")
def read(doc_id: str) -> Response:
    return Response(json.dumps(public(_owned(doc_id))), mimetype="application/json")


@bp.get("/documents/<doc_id>/content")
@require("read")
def content(doc_id: str) -> Response:
    record = _owned(doc_id)
    if record["deleted_at"] is not None:
        raise Problem(410, "Gone", f"document {doc_id} was deleted; its record (and hash) remain",
                      type=TYPES + "gone")

    def chunks() -> Iterator[bytes]:
        with documents().content(record) as plain:
            yield from plain

    body = chunks()
    try:
        first = next(body)  # opens the store now: a missing or unreachable one is a problem, not a cut body
    except DocumentMissing:
        raise Problem(410, "Gone", f"the content of document {doc_id} is no longer stored",
                      type=TYPES + "gone") from None

    def all_of() -> Iterator[bytes]:
        try:
            yield first
            yield from body
        finally:
            body.close()

    response = Response(all_of(), mimetype=record["media_type"])
    response.headers["Content-Length"] = str(record["size"])
    response.headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(record['filename'])}"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"
    return response
