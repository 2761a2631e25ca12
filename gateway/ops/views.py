"""``/ops/``: the operators' dashboard, server-rendered, with ``/ops/api`` nested under it.

Pages need an ``ops`` key, entered once in the login form and exchanged for a server-side
session whose token the browser sends as the ``satupintu_ops`` cookie (``session.py``,
``gateway/sessions.py``); without one a page sends the browser to the login form.  Every page shows what the matching ``/ops/api`` endpoint
returns, personal data masked.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from markupsafe import Markup

from .. import clients, sessions
from ..api.context import authenticate, ctx
from ..api.problems import Problem
from . import api, queries, session, svg

bp = Blueprint("ops", __name__, url_prefix="/ops", template_folder="templates", static_folder="static")
bp.register_blueprint(api.bp)
bp.after_request(session.secure_headers)


@bp.app_template_filter("ops_chip")
def _chip(status: str | None) -> str:
    return f"chip s-{status or 'none'}"


@bp.app_template_filter("ops_ms")
def _ms(value: float | None) -> str:
    return "–" if value is None else (f"{value:.0f} ms" if value < 10_000 else f"{value / 1000:.1f} s")


@functools.cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _moment(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@bp.app_template_filter("ops_clock")
def _clock(value: str | None) -> str:
    """HH:MM:SS in the hall's time zone, as plain text (for a title)."""
    return _moment(value).astimezone(_zone(ctx().settings.timezone)).strftime("%H:%M:%S") if value else "–"


@bp.app_template_filter("ops_time")
def _time(value: str | None, short: bool = False) -> Markup:
    """A stored UTC time in the hall's time zone, to the second, with UTC on hover."""
    if not value:
        return Markup("–")
    moment = _moment(value)
    local = moment.astimezone(_zone(ctx().settings.timezone))
    utc = moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        value, utc, local.strftime("%H:%M:%S" if short else "%Y-%m-%d %H:%M:%S"))


@bp.context_processor
def _hall() -> dict[str, Any]:
    return {"hall_timezone": ctx().settings.timezone}


@bp.app_template_filter("ops_percent")
def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def page(view: Callable) -> Callable:
    """A dashboard page: an ``ops`` key (cookie or Bearer), else the login form."""
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            client = authenticate()
        except Problem:
            return redirect(url_for("ops.login", next=request.full_path.rstrip("?")))
        if "ops" not in client.scopes:
            return render_template("login.html", error="This key lacks the ops scope.", next=request.path), 403
        g.client = client
        return view(*args, **kwargs)
    return wrapper


def _read():  # noqa: ANN202
    return ctx().engine.connect().execution_options(readonly=True)


# --- login ---------------------------------------------------------------------------

@bp.get("/login")
def login() -> str:
    return render_template("login.html", error=None, next=session.safe_next(request.args.get("next")))


@bp.post("/login")
def login_submit() -> Any:
    target = session.safe_next(request.form.get("next"))
    if not session.same_origin():
        return render_template("login.html", error="Sign in from this dashboard's own page.", next=target), 403
    key = (request.form.get("key") or "").strip()
    client = None
    if key:
        with _read() as conn:
            client = clients.authenticate(conn, key)
    if client is None:
        return render_template("login.html", error="That key is not valid or was revoked.", next=target), 401
    if "ops" not in client.scopes:
        return render_template("login.html", error="This key lacks the ops scope.", next=target), 403
    response = redirect(target)
    with ctx().engine.begin() as conn:
        session.set_cookie(response, sessions.start(conn, client))
    return response


@bp.post("/logout")
def logout() -> Response:
    if not session.same_origin():
        return Response("cross-site logout refused", status=403, mimetype="text/plain")
    response = redirect(url_for("ops.login"))
    token = request.cookies.get(session.COOKIE)
    if token:
        with ctx().engine.begin() as conn:
            sessions.end(conn, token)
    session.clear_cookie(response)
    return response


# --- pages ---------------------------------------------------------------------------

@bp.get("/")
@page
def overview() -> str:
    c = ctx()
    with _read() as conn:
        summary = queries.overview(conn, c.settings, c.catalog)
        recent = queries.recent_applications(conn, c.catalog, limit=15)
        agencies = queries.agencies(conn, c.settings, c.catalog)
    return render_template("overview.html", summary=summary, recent=recent, agencies=agencies,
                           latency_svg=svg.latency_svg, active="overview")


PAGE = 50  # applications per page


@bp.get("/applications")
@page
def applications() -> str:
    c = ctx()
    filters = api.application_filters()
    with _read() as conn:
        items = queries.recent_applications(conn, c.catalog, limit=PAGE, **filters)
    chosen = {k: v for k, v in filters.items() if v and k != "before"}
    return render_template("applications.html", items=items, filters=chosen, paged=bool(filters["before"]),
                           next=items[-1]["id"] if len(items) == PAGE else None,
                           services=sorted(c.catalog.services), agencies=sorted(c.catalog.agencies),
                           statuses=queries.APPLICATION_STATUSES, active="applications")


@bp.get("/applications/<app_id>")
@page
def application(app_id: str) -> Any:
    with _read() as conn:
        doc = queries.application(conn, ctx().catalog, app_id)
    if doc is None:
        return render_template("not_found.html", what=f"application {app_id}", active="applications"), 404
    return render_template("application.html", app=doc, dag=svg.dag_svg(doc["dag"]), lanes=queries.LANES,
                           active="applications")


@bp.get("/agencies")
@page
def agencies() -> str:
    c = ctx()
    with _read() as conn:
        items = queries.agencies(conn, c.settings, c.catalog)
    return render_template("agencies.html", agencies=items, queues=queries.queue_documents(c.settings, c.catalog),
                           latency_svg=svg.latency_svg, active="agencies")


@bp.get("/dead-letters")
@page
def dead_letters() -> str:
    c = ctx()
    agency, reason = request.args.get("agency") or None, (request.args.get("reason") or "")[:200] or None
    with _read() as conn:
        items = queries.open_dead_letters(conn, c.catalog, agency=agency, reason=reason)
    return render_template("dead_letters.html", items=items, agency=agency, reason=reason,
                           agencies=sorted(c.catalog.agencies), replay_rate=c.settings.ops_replay_rate,
                           active="dead-letters")


@bp.route("/search", methods=["GET", "POST"])
@page
def search() -> Any:
    # The form posts, so a NIK typed into it stays out of URLs, history and proxy logs.
    if request.method == "POST" and not session.same_origin():
        return Response("cross-site search refused", status=403, mimetype="text/plain")
    q = (request.form.get("q") if request.method == "POST" else request.args.get("q", "")) or ""
    q = q[:200]
    with _read() as conn:
        found = queries.search(conn, ctx().catalog, q)
    return render_template("search.html", found=found, q=q if found["kind"] != "nik" else found["query"],
                           active="search")
