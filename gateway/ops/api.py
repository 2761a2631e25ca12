"""``/ops/api/...``: the JSON behind every dashboard view.  Every endpoint needs the ``ops`` scope."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, json, request

from core.domain.errors import NotFound

from .. import dead_letters
from ..api.context import ctx, current_client, require
from ..api.problems import TYPES, Problem
from . import queries
from .session import require_same_origin

bp = Blueprint("api", __name__, url_prefix="/api")


def _json(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value), status=status, mimetype="application/json")


def _limit(default: int, most: int) -> int:
    """The ``limit`` query parameter, 1 to ``most`` as the OpenAPI document says; else 400."""
    raw = request.args.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= most:
        raise Problem(400, "Bad Request", f"limit must be an integer from 1 to {most}", type=TYPES + "malformed")
    return value


def _read():  # noqa: ANN202
    return ctx().engine.connect().execution_options(readonly=True)


@bp.get("/overview")
@require("ops")
def overview() -> Response:
    c = ctx()
    with _read() as conn:
        return _json(queries.overview(conn, c.settings, c.catalog))


@bp.get("/applications")
@require("ops")
def applications() -> Response:
    with _read() as conn:
        items = queries.recent_applications(conn, ctx().catalog, limit=_limit(20, 200),
                                            status=request.args.get("status") or None)
    return _json({"items": items})


@bp.get("/applications/<app_id>")
@require("ops")
def application(app_id: str) -> Response:
    with _read() as conn:
        doc = queries.application(conn, ctx().catalog, app_id)
    if doc is None:
        raise Problem(404, "Not found", f"no application {app_id[:100]!r}", type=TYPES + "not-found")
    return _json(doc)


@bp.get("/agencies")
@require("ops")
def agencies() -> Response:
    c = ctx()
    with _read() as conn:
        return _json({"items": queries.agencies(conn, c.settings, c.catalog)})


@bp.get("/queues")
@require("ops")
def queues() -> Response:
    c = ctx()
    return _json(queries.queue_documents(c.settings, c.catalog))


@bp.get("/dead-letters")
@require("ops")
def dead_letter_list() -> Response:
    with _read() as conn:
        return _json({"items": queries.open_dead_letters(conn, limit=_limit(200, 1000))})


@bp.post("/dead-letters/<int(max=9223372036854775807):dead_id>/replay")  # a larger id is no row: 404
@require("ops")
def replay(dead_id: int) -> Response:
    require_same_origin()
    c = ctx()
    try:
        done = dead_letters.replay(c.engine, c.catalog, ids=[dead_id],
                                   cause=f"replayed by {current_client().name} in /ops")
    except NotFound:
        raise Problem(404, "Not found", f"no open dead letter {dead_id}", type=TYPES + "not-found") from None
    if not done:  # replayed by someone else a moment ago
        raise Problem(404, "Not found", f"no open dead letter {dead_id}", type=TYPES + "not-found")
    return _json({"replayed": done})


@bp.get("/search")
@require("ops")
def search() -> Response:
    q = request.args.get("q", "")
    if len(q) > 200:
        raise Problem(400, "Bad Request", "the query is longer than 200 characters", type=TYPES + "malformed")
    with _read() as conn:
        return _json(queries.search(conn, ctx().catalog, q, limit=_limit(50, 200)))
