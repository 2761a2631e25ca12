"""/v1/applications: submit, read, list, history, live events, cancel."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from flask import Blueprint, Response, request, stream_with_context, url_for

from .. import applications as apps
from ..domain.status import ApplicationStatus
from ..store import records
from .context import ctx, current_client, require
from .problems import TYPES, Problem

bp = Blueprint("applications", __name__, url_prefix="/v1")

MAX_PAGE = 100
_BODY_KEYS = {"service", "data", "reference"}


def json_body() -> Any:
    """The request body as JSON, or a 4xx problem that says what is wrong with it."""
    if not request.mimetype or request.mimetype != "application/json":
        raise Problem(415, "Unsupported Media Type", "send the body as application/json",
                      type=TYPES + "unsupported-media-type")
    raw = request.get_data(cache=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(400, "Bad Request", f"the body is not valid UTF-8 (byte {exc.start})",
                      type=TYPES + "malformed") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise Problem(400, "Bad Request", "the body nests too deeply", type=TYPES + "malformed") from None
    except ValueError as exc:
        raise Problem(400, "Bad Request", f"the body is not valid JSON: {exc}", type=TYPES + "malformed") from None


def _check_envelope(body: Any) -> None:
    errors = []
    if not isinstance(body, dict):
        raise Problem(422, "Validation failed", "the body must be a JSON object", type=TYPES + "validation",
                      errors=[{"path": "/", "message": "must be an object"}])
    for key in sorted(set(body) - _BODY_KEYS):
        errors.append({"path": f"/{key}", "message": "unknown field"})
    service = body.get("service")
    if not isinstance(service, str):
        errors.append({"path": "/service", "message": "required: the id of a service in GET /v1/services"})
    elif service not in ctx().catalog.services:
        errors.append({"path": "/service", "message": f"unknown service {service[:100]!r}"})
    if not isinstance(body.get("data"), dict):
        errors.append({"path": "/data", "message": "required: an object"})
    reference = body.get("reference")
    if reference is not None and (not isinstance(reference, str) or len(reference) > 200):
        errors.append({"path": "/reference", "message": "must be a string of at most 200 characters"})
    if errors:
        raise Problem(422, "Validation failed", "the request does not match the schema", type=TYPES + "validation",
                      errors=errors)


@bp.post("/applications")
@require("submit")
def submit() -> Response:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (1 <= len(key) <= 200 and key.isprintable()):
        raise Problem(400, "Bad Request", "Idempotency-Key must be 1 to 200 printable characters",
                      type=TYPES + "malformed")
    body = json_body()
    _check_envelope(body)
    c = ctx()
    document, _created = apps.submit(c.engine, c.catalog, current_client(), body, key)
    response = Response(json.dumps(document), status=202, mimetype="application/json")
    response.headers["Location"] = url_for("applications.read", app_id=document["id"])
    return response


@bp.get("/applications/<app_id>")
@require("read")
def read(app_id: str) -> Response:
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
    after = None
    cursor = request.args.get("cursor")
    if cursor:
        try:
            created, app_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
            after = (str(created), str(app_id))
        except (ValueError, TypeError):
            raise Problem(400, "Bad Request", "cursor is not valid", type=TYPES + "malformed") from None
    with c.engine.connect().execution_options(readonly=True) as conn:
        rows = records.list_applications(conn, current_client().id, status=status,
                                         service=request.args.get("service"), after=after, limit=limit + 1)
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
        if records.application_row(conn, app_id, client_id=current_client().id) is None:
            raise Problem(404, "Not found", f"no application {app_id}", type=TYPES + "not-found")
        return _json({"application_id": app_id, "events": records.history(conn, app_id)})


@bp.get("/applications/<app_id>/events")
@require("read")
def events(app_id: str) -> Response:
    """Server-sent events: every event of the application, live; resumable with Last-Event-ID."""
    c = ctx()
    client = current_client()
    with c.engine.connect().execution_options(readonly=True) as conn:
        if records.application_row(conn, app_id, client_id=client.id) is None:
            raise Problem(404, "Not found", f"no application {app_id}", type=TYPES + "not-found")
    try:
        last = int(request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or 0)
    except ValueError:
        last = 0
    max_seconds = min(float(request.args.get("timeout", 300) or 300), 3600)

    def stream():
        nonlocal last
        deadline = time.monotonic() + max_seconds
        idle = 0.0
        while time.monotonic() < deadline:
            with c.engine.connect().execution_options(readonly=True) as conn:
                new = records.history(conn, app_id, after_id=last)
                status = records.application_row(conn, app_id).status
            for event in new:
                last = event["id"]
                yield f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"
            if new:
                idle = 0.0
            if ApplicationStatus(status).terminal and not new:
                yield "event: end\ndata: {}\n\n"
                return
            time.sleep(0.25)
            idle += 0.25
            if idle >= 15:
                idle = 0.0
                yield ": keep-alive\n\n"

    response = Response(stream_with_context(stream()), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


@bp.post("/applications/<app_id>/cancel")
@require("submit")
def cancel(app_id: str) -> Response:
    c = ctx()
    return _json(apps.cancel(c.engine, c.catalog, current_client(), app_id), status=202)


def _json(document: Any, status: int = 200) -> Response:
    return Response(json.dumps(document), status=status, mimetype="application/json")
