"""``/ops/api/...``: the JSON behind every dashboard view.  Every endpoint needs the ``ops`` scope."""

from __future__ import annotations

from collections import Counter
from typing import Any

from flask import Blueprint, Response, json, request

from core.domain.errors import NotFound

from .. import dead_letters
from ..api.applications import json_body
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
        limit = _limit(20, 200)
        items = queries.recent_applications(conn, ctx().catalog, limit=limit, **application_filters())
    # The cursor of the next page: the last id of a full page.
    return _json({"items": items, "next": items[-1]["id"] if len(items) == limit else None})


def application_filters() -> dict[str, str | None]:
    """The applications list's filters from the query: status, service, agency, and the page cursor."""
    return {name: request.args.get(name) or None for name in ("status", "service", "agency", "before")}


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
        return _json({"items": queries.open_dead_letters(conn, ctx().catalog, limit=_limit(200, 1000),
                                                         agency=request.args.get("agency") or None,
                                                         reason=request.args.get("reason") or None)})


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


BULK_MOST = 500  # dead letters one bulk replay takes; a larger backlog takes several runs


@bp.post("/dead-letters/replay")
@require("ops")
def bulk_replay() -> Response:
    """Replay the open dead letters an ``agency`` / ``reason`` filter picks (or ``ids`` of a dry run).

    A dry run unless ``"dry_run": false``: then it needs ``why``, sends ``rate`` per second,
    records who and why in each application's history, and reports what each message did
    as seen in the history within ``wait`` seconds, not just that a replay was written."""
    require_same_origin()
    body = json_body() if request.content_length else {}  # no body: a dry run of everything open
    if not isinstance(body, dict):
        raise _invalid("/", "a JSON object")
    agency, reason = _text(body, "agency"), _text(body, "reason")
    ids = body.get("ids")
    if ids is not None:
        # JSON has one number type: 7.0 is the id 7 too, as JSON Schema's ``integer`` says.
        if not (isinstance(ids, list) and all(_whole(i) and 0 <= i < 2**63 for i in ids)):
            raise _invalid("/ids", "a list of dead-letter ids")
        ids = [int(i) for i in ids]
    c = ctx()
    rate = _number(body, "rate", c.settings.ops_replay_rate, least=0.1, most=100)  # checked in a dry run too
    wait = _number(body, "wait", 30, least=0, most=120)
    with _read() as conn:
        planned = dead_letters.plan(conn, agency=agency, reason=reason, ids=ids, limit=BULK_MOST)
    if body.get("dry_run", True) is not False:
        return _json({"dry_run": True, **planned})
    why = _text(body, "why")
    if not why:
        raise _invalid("/why", "say why these dead letters are replayed")
    who = current_client().name
    results = dead_letters.replay_paced(c.engine, c.catalog, planned["ids"], rate=rate,
                                        cause=f"bulk replay by {who}: {why}", detail={"by": who, "why": why})
    dead_letters.verify(c.engine, results, wait=wait)
    return _json({"dry_run": False, "by": who, "why": why, "rate": rate,
                  "counts": dict(Counter(r["result"] for r in results)), "results": results})


def _whole(value: Any) -> bool:
    return type(value) is int or (type(value) is float and value.is_integer())


def _invalid(path: str, message: str) -> Problem:
    return Problem(422, "Unprocessable Content", message, type=TYPES + "validation",
                   errors=[{"path": path, "message": message}])


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise _invalid(f"/{name}", "must be text")
    return (value or "").strip()[:500] or None


def _number(body: dict[str, Any], name: str, default: float, *, least: float, most: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not least <= value <= most:
        raise _invalid(f"/{name}", f"a number from {least:g} to {most:g}")
    return float(value)


@bp.get("/search")
@require("ops")
def search() -> Response:
    q = request.args.get("q", "")
    if len(q) > 200:
        raise Problem(400, "Bad Request", "the query is longer than 200 characters", type=TYPES + "malformed")
    with _read() as conn:
        return _json(queries.search(conn, ctx().catalog, q, limit=_limit(50, 200)))
