"""/v1/applications: submit, read, list, history, cancel (live events: events.py)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from typing import Any

from flask import Blueprint, Request, Response, current_app, g, request

from core import masking
from core.domain.status import ApplicationStatus

from .. import applications as apps
from ..store import records
from .context import ctx, current_client, require
from .problems import TYPES, Problem

bp = Blueprint("applications", __name__, url_prefix="/v1")

MAX_PAGE = 100
MAX_DEPTH = 32  # nesting of a request body; the service schemas need far less
_ID = re.compile(r"[a-z]{2,8}_[0-9a-f]{32}")
_BODY_KEYS = {"service", "data", "reference", "documents"}


def raw_body(req: Request | None = None) -> bytes:
    """The request body, or 413 when it exceeds ``MAX_CONTENT_LENGTH``.

    Werkzeug refuses a declared ``Content-Length`` that is too large, but a chunked body
    (no length; the server sets ``wsgi.input_terminated``) is silently cut at the limit:
    a body that fills the limit exactly is therefore taken as too large.
    """
    if req is None:
        req = request
    raw = req.get_data(cache=True)
    most = current_app.config.get("MAX_CONTENT_LENGTH")
    if most is not None and req.content_length is None and len(raw) >= most:
        raise Problem(413, "Content Too Large", f"the body is larger than {most} bytes",
                      type=TYPES + "too-large")
    return raw


def json_body(req: Request | None = None) -> Any:
    """The request body as JSON, or a 4xx problem that says what is wrong with it."""
    if req is None:
        req = request
    mimetype = req.mimetype
    if not mimetype or mimetype != "application/json":
        raise Problem(415, "Unsupported Media Type", "send the body as application/json",
                      type=TYPES + "unsupported-media-type")
    if req.mimetype_params.get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
        raise Problem(415, "Unsupported Media Type", "send the body in UTF-8 (charset=utf-8, or none)",
                      type=TYPES + "unsupported-media-type")
    raw = raw_body(req)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(400, "Bad Request", f"the body is not valid UTF-8 (byte {exc.start})",
                      type=TYPES + "malformed") from None
    try:
        body = json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        body = None
        too_deep = True
    except ValueError as exc:
        raise Problem(400, "Bad Request", f"the body is not valid JSON: {exc}", type=TYPES + "malformed") from None
    else:
        # Each level of nesting opens with a ``[`` or ``{`` of its own: a text with no more
        # of them than the limit cannot nest deeper (brackets inside strings only add to the count).
        too_deep = raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth_exceeds(body, MAX_DEPTH)
    if too_deep:
        raise Problem(400, "Bad Request", f"the body nests deeper than {MAX_DEPTH} levels", type=TYPES + "malformed")
    # Valid UTF-8 holds no surrogates, so one can only come from a ``\uD8xx`` escape that
    # no low half follows: JSON parses it, but it is not text -- no store, log or agency
    # can encode it.  Only bodies with an escape are walked.
    if b"\\u" in raw:
        where = _lone_surrogate(body)
        if where is not None:
            raise Problem(400, "Bad Request", "the body holds an unpaired UTF-16 surrogate escape (\\uD800-\\uDFFF)",
                          type=TYPES + "malformed",
                          errors=[{"path": where, "message": "an unpaired surrogate escape is not text"}])
    return body


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, or 400 when it names a key twice (which one counts is not for a parser to guess)."""
    obj = dict(pairs)
    if len(obj) < len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _value in pairs if key in seen or seen.add(key))
        raise Problem(400, "Bad Request", f"the body names the key {twice[:100]!r} twice in one object",
                      type=TYPES + "malformed")
    return obj


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value: Any) -> str | None:
    """The JSON Pointer of the first string (value or key) in ``value`` holding a lone surrogate."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return path or "/"
        elif isinstance(node, dict):
            for key, child in node.items():
                pointer = f"{path}/{key.replace('~', '~0').replace('/', '~1')}"
                if _SURROGATE.search(key):  # named as escaped: the answer must be text too
                    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", pointer)
                stack.append((child, pointer))
        elif isinstance(node, list):
            stack.extend((child, f"{path}/{i}") for i, child in enumerate(node))
    return None


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests more than ``limit`` arrays/objects deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False


def _check_id(app_id: str) -> None:
    """Ids are ``app_<hex>``: anything else (traversal, SQL, NUL bytes) is simply not found."""
    if not _ID.fullmatch(app_id):
        raise Problem(404, "Not found", "no such application", type=TYPES + "not-found")


def _owned(conn: Any, app_id: str) -> Any:
    """The caller's application ``app_id``, or 404 (another client's id is not found either)."""
    _check_id(app_id)
    app = records.application_row(conn, app_id, client_id=current_client().id)
    if app is None:
        raise Problem(404, "Not found", f"no application {app_id}", type=TYPES + "not-found")
    return app


def _redacted(events: list[dict[str, Any]], app: Any) -> list[dict[str, Any]]:
    """Events with the applicant's personal values (``x-pii`` fields) masked wherever they appear."""
    service = ctx().catalog.services.get(app.service)
    secrets = masking.pii_values(app.data, service.input_schema) if service else set()
    if not secrets:
        return events
    return [{**e, "detail": masking.redact(e["detail"], secrets), "cause": masking.redact(e["cause"], secrets)}
            for e in events]


def _check_envelope(body: Any, services: dict[str, Any]) -> None:
    errors = []
    if not isinstance(body, dict):
        raise Problem(422, "Validation failed", "the body must be a JSON object", type=TYPES + "validation",
                      errors=[{"path": "/", "message": "must be an object"}])
    if not body.keys() <= _BODY_KEYS:
        for key in sorted(set(body) - _BODY_KEYS):
            errors.append({"path": f"/{key}", "message": "unknown field"})
    service = body.get("service")
    if not isinstance(service, str):
        errors.append({"path": "/service", "message": "required: the id of a service in GET /v1/services"})
    elif service not in services:
        errors.append({"path": "/service", "message": f"unknown service {service[:100]!r}"})
    if not isinstance(body.get("data"), dict):
        errors.append({"path": "/data", "message": "required: an object"})
    reference = body.get("reference")
    if "reference" in body and (not isinstance(reference, str) or len(reference) > 200 or "\x00" in reference):
        errors.append({"path": "/reference", "message": "must be a string of at most 200 characters"})
    if errors:
        raise Problem(422, "Validation failed", "the request does not match the schema", type=TYPES + "validation",
                      errors=errors)


@bp.post("/applications")
@require("submit")
def submit() -> Response:
    req = request
    key = req.headers.get("Idempotency-Key")
    if key is not None and not (1 <= len(key) <= 200 and key.isprintable()):
        raise Problem(400, "Bad Request", "Idempotency-Key must be 1 to 200 printable characters",
                      type=TYPES + "malformed")
    body = json_body(req)
    g.submission = body  # counted by service in gateway/api/metrics.py without parsing it again
    c = ctx()
    _check_envelope(body, c.catalog.services)
    document, _created = apps.submit(c.engine, c.catalog, g.client, body, key)
    response = Response(json.dumps(document), status=202, mimetype="application/json")
    # What url_for("applications.read") gives, without building it through the URL map.
    response.headers["Location"] = f"{req.script_root}{bp.url_prefix}/applications/{document['id']}"
    return response


@bp.get("/applications/<app_id>")
@require("read")
def read(app_id: str) -> Response:
    _check_id(app_id)
    c = ctx()
    return _json(apps.read(c.engine, c.catalog, current_client(), app_id))


@bp.get("/applications")
@require("read")
def list_() -> Response:
    c = ctx()
    try:
        limit = int(request.args.get("limit", 50))
    except ValueError:
        raise Problem(400, "Bad Request", "limit must be an integer", type=TYPES + "malformed") from None
    if not 1 <= limit <= MAX_PAGE:
        raise Problem(400, "Bad Request", f"limit must be between 1 and {MAX_PAGE}", type=TYPES + "malformed")
    status = request.args.get("status")
    if status is not None and status not in {s.value for s in ApplicationStatus}:
        raise Problem(400, "Bad Request", f"unknown status {status[:50]!r}", type=TYPES + "malformed")
    service = request.args.get("service")
    if service is not None and service not in c.catalog.services:
        raise Problem(400, "Bad Request", f"unknown service {service[:100]!r}", type=TYPES + "malformed")
    after = None
    cursor = request.args.get("cursor")
    if cursor:
        try:
            created, app_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
            dt.datetime.fromisoformat(str(created).replace("Z", "+00:00"))
            _check_id(str(app_id))
            after = (str(created), str(app_id))
        except (ValueError, TypeError, Problem):
            raise Problem(400, "Bad Request", "cursor is not valid", type=TYPES + "malformed") from None
    with c.engine.connect().execution_options(readonly=True) as conn:
        rows = records.list_applications(conn, current_client().id, status=status,
                                         service=service, after=after, limit=limit + 1)
        items = []
        for app in rows[:limit]:
            service = c.catalog.services.get(app.service)
            items.append(records.application_document(app, records.request_rows(conn, app.id),
                                                      order=service.order if service else ()))
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = base64.urlsafe_b64encode(json.dumps([records.iso(last.created_at), last.id]).encode()).decode()
    return _json({"items": items, "next_cursor": next_cursor})


@bp.get("/applications/<app_id>/history")
@require("read")
def history(app_id: str) -> Response:
    c = ctx()
    with c.engine.connect().execution_options(readonly=True) as conn:
        app = _owned(conn, app_id)
        return _json({"application_id": app_id, "events": _redacted(records.history(conn, app_id), app)})


@bp.post("/applications/<app_id>/cancel")
@require("submit")
def cancel(app_id: str) -> Response:
    _check_id(app_id)
    c = ctx()
    return _json(apps.cancel(c.engine, c.catalog, current_client(), app_id), status=202)


def _json(document: Any, status: int = 200) -> Response:
    return Response(json.dumps(document), status=status, mimetype="application/json")
