"""What the dashboard shows, read from the store (and the broker for queue depths).

Every function returns JSON-ready documents with personal data already masked, so the
HTML views and ``/ops/api`` show exactly the same thing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from core import masking
from core.domain.dag import check_dag
from core.model import Catalog
from core.settings import Settings

from .. import dead_letters
from ..store import records
from ..store import tables as t
from . import health, queues

TERMINAL = ("completed", "rejected", "failed", "cancelled")
APPLICATION_STATUSES = ("in_progress", "action_required", *TERMINAL)

# Where each kind of event happens on the way gateway → outbox → broker → worker → agency → tracker.
LANES = ("gateway", "outbox", "broker", "worker", "agency", "tracker")
_LANE = {"submitted": "gateway", "published": "broker", "attempt": "worker", "outcome": "agency",
         "retry": "agency", "callback": "agency", "poll": "agency", "failed": "tracker", "replay": "gateway",
         "cancel": "gateway", "application": "tracker", "notification": "tracker"}
_ORIGIN = {"submitted": "the front office's POST, stored with its outbox rows in one transaction",
           "published": "the relay published the outbox row; RabbitMQ confirmed it",
           "attempt": "a worker took the message off the agency queue and calls the agency",
           "outcome": "the agency answered the worker", "retry": "the call failed; the worker scheduled a retry",
           "callback": "the agency's signed callback reached the gateway",
           "poll": "a worker asked the agency for its decision", "failed": "the tracker recorded a dead letter",
           "replay": "an operator replayed the dead letter", "cancel": "the front office cancelled",
           "application": "the tracker settled the combined status",
           "notification": "the front office's webhook"}


def lane(event_type: str, status: str | None) -> str:
    if event_type == "status":
        return "outbox" if status == "queued" else "tracker"
    return _LANE.get(event_type, "worker")


# --- overview ------------------------------------------------------------------------

def overview(conn: Connection, settings: Settings, catalog: Catalog) -> dict[str, Any]:
    by_status = dict.fromkeys(("in_progress", *TERMINAL), 0)
    for status, n in conn.execute(select(t.applications.c.status, func.count()).group_by(t.applications.c.status)):
        by_status[status] = n
    day_ago = health.since_value(conn, records.now() - dt.timedelta(days=1))
    today = conn.execute(select(func.count()).select_from(t.applications)
                         .where(t.applications.c.created_at >= day_ago)).scalar() or 0
    open_dead = conn.execute(select(func.count()).select_from(t.dead_letters)
                             .where(t.dead_letters.c.replayed_at.is_(None))).scalar() or 0
    unsent = conn.execute(select(func.count()).select_from(t.outbox).where(t.outbox.c.sent_at.is_(None))).scalar()
    snap = queues.snapshot(settings, catalog)
    agency_depth = sum(q.messages or 0 for q in snap.queues if q.kind == "agency")
    tracker = snap.named("tracker")
    return {
        "applications": by_status,
        "applications_total": sum(by_status.values()),
        "submitted_last_24h": today,
        "dead_letters_open": open_dead,
        "outbox": {"unsent": unsent or 0, "lag_seconds": round(records.oldest_unsent_age(conn), 3)},
        "tracker": {"queue_depth": tracker.messages if tracker else None,
                    "lag_seconds": tracker_lag(conn)},
        "queues": {"agency_messages": agency_depth, "broker_ok": snap.ok, "broker_detail": snap.detail},
        "at": records.iso(records.now()),
    }


def tracker_lag(conn: Connection) -> float | None:
    """How late the tracker applied the newest worker event: its recorded_at minus occurred_at."""
    row = conn.execute(select(t.events.c.occurred_at, t.events.c.recorded_at)
                       .where(t.events.c.type.in_(("attempt", "outcome", "retry", "poll")))
                       .order_by(t.events.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    occurred = row.occurred_at if row.occurred_at.tzinfo else row.occurred_at.replace(tzinfo=dt.UTC)
    recorded = row.recorded_at if row.recorded_at.tzinfo else row.recorded_at.replace(tzinfo=dt.UTC)
    return round(max(0.0, (recorded - occurred).total_seconds()), 3)


# --- applications ----------------------------------------------------------------------

def _summary(app: Any, requests: list[Any], catalog: Catalog) -> dict[str, Any]:
    service = catalog.services.get(app.service)
    rank = {step: i for i, step in enumerate(service.order if service else ())}
    steps = sorted(requests, key=lambda r: (rank.get(r.step, len(rank)), r.step))
    return {"id": app.id, "service": app.service, "status": app.status,
            "reference": masking.mask_free_text(app.reference),  # also of rows stored before it was masked
            "created_at": records.iso(app.created_at), "updated_at": records.iso(app.updated_at),
            "steps": [{"step": r.step, "agency": r.agency, "status": r.status, "attempts": r.attempts,
                       "request_id": r.id} for r in steps]}


def _summaries(conn: Connection, apps: list[Any], catalog: Catalog) -> list[dict[str, Any]]:
    if not apps:
        return []
    by_app: dict[str, list[Any]] = {a.id: [] for a in apps}
    for r in conn.execute(select(t.requests).where(t.requests.c.application_id.in_(list(by_app)))):
        by_app[r.application_id].append(r)
    waiting = retrying(conn, [r.id for rows in by_app.values() for r in rows if r.status in RETRYABLE])
    summaries = [_summary(a, by_app[a.id], catalog) for a in apps]
    for summary in summaries:
        for step in summary["steps"]:
            step["retry"] = waiting.get(step.pop("request_id"))
    return summaries


def recent_applications(conn: Connection, catalog: Catalog, *, limit: int = 20, status: str | None = None,
                        service: str | None = None, agency: str | None = None,
                        before: str | None = None) -> list[dict[str, Any]]:
    """Newest first, filtered by combined status, service and an agency among the steps;
    ``before`` (an application id, the last of the previous page) starts the page after it."""
    apps = t.applications
    query = select(apps)
    if status:
        query = query.where(apps.c.status == status)
    if service:
        query = query.where(apps.c.service == service)
    if agency:
        query = query.where(apps.c.id.in_(select(t.requests.c.application_id).where(t.requests.c.agency == agency)))
    if before:
        mark = select(apps.c.created_at).where(apps.c.id == before).scalar_subquery()
        query = query.where(or_(apps.c.created_at < mark, and_(apps.c.created_at == mark, apps.c.id < before)))
    rows = list(conn.execute(query.order_by(apps.c.created_at.desc(), apps.c.id.desc()).limit(limit)))
    return _summaries(conn, rows, catalog)


def application(conn: Connection, catalog: Catalog, app_id: str) -> dict[str, Any] | None:
    """The application document, its masked data, the message-flow timeline and the step DAG."""
    app = records.application_row(conn, app_id)
    if app is None:
        return None
    requests = records.request_rows(conn, app.id)
    service = catalog.services.get(app.service)
    doc = records.application_document(app, requests, order=service.order if service else ())
    doc["data"] = masking.mask(app.data)
    doc["client_id"] = app.client_id
    doc["reference"] = masking.mask_free_text(doc["reference"])
    for r in doc["requests"]:
        r["reason"] = masking.mask_free_text(r["reason"])
    doc["timeline"] = timeline(conn, app)
    doc["dag"] = dag(service, {r.step: r for r in requests}) if service else {"nodes": [], "edges": []}
    agencies = catalog.agencies
    attempts = {r.id: r.attempts for r in requests}
    doc["dead_letters"] = [_masked_dead_letter(dead_letters.document(
        d, attempts=attempts.get(d.request_id) if d.replayed_at is None else None,
        max_attempts=agencies[d.agency].max_attempts if d.agency in agencies else None))
        for d in conn.execute(select(t.dead_letters).where(t.dead_letters.c.application_id == app.id)
                              .order_by(t.dead_letters.c.id))]
    waiting = retrying(conn, [r.id for r in requests if r.status in RETRYABLE])
    for r in doc["requests"]:
        r["retry"] = waiting.get(r["request_id"])
    for node in doc["dag"]["nodes"]:
        node["retrying"] = any(r["retry"] for r in doc["requests"] if r["step"] == node["step"])
    return doc


RETRYABLE = ("queued", "sent")


def retrying(conn: Connection, request_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The requests whose latest worker event is a retry: when the next attempt is due and why.

    The worker's ``retry`` event carries the delay it parked the message for; the next
    attempt is due that long after the event occurred."""
    if not request_ids:
        return {}
    e = t.events
    latest = (select(e.c.request_id, func.max(e.c.id).label("id"))
              .where(e.c.request_id.in_(request_ids), e.c.type.in_(dead_letters.WORKER_EVENTS + ("replay",)))
              .group_by(e.c.request_id).subquery())
    out = {}
    for row in conn.execute(select(e.c.request_id, e.c.type, e.c.detail, e.c.occurred_at)
                            .join(latest, latest.c.id == e.c.id)):
        detail = row.detail or {}
        if row.type != "retry" or detail.get("delay_seconds") is None:
            continue
        occurred = row.occurred_at if row.occurred_at.tzinfo else row.occurred_at.replace(tzinfo=dt.UTC)
        out[row.request_id] = {
            "next_attempt_at": records.iso(occurred + dt.timedelta(seconds=float(detail["delay_seconds"]))),
            "next_attempt": detail.get("next_attempt"),
            "reason": masking.mask_free_text(detail.get("reason") or "")}
    return out


def timeline(conn: Connection, app: Any) -> list[dict[str, Any]]:
    """The history plus the relay's publications, in time order, each placed in its lane."""
    entries = []
    for e in records.history(conn, app.id):
        entries.append({**e, "lane": lane(e["type"], e["status"]), "origin": _ORIGIN.get(e["type"], ""),
                        "cause": masking.mask_free_text(e["cause"]),
                        "detail": masking.mask(e["detail"])})
    # When the relay published each dispatch message (the outbox rows of this application).
    created = health.since_value(conn, app.created_at if app.created_at.tzinfo
                                 else app.created_at.replace(tzinfo=dt.UTC))
    rows = conn.execute(select(t.outbox.c.id, t.outbox.c.exchange, t.outbox.c.body, t.outbox.c.created_at,
                               t.outbox.c.sent_at)
                        .where(t.outbox.c.created_at >= created,
                               t.outbox.c.headers["application_id"].as_string() == app.id)
                        .order_by(t.outbox.c.id))
    for row in rows:
        body = row.body or {}
        if row.sent_at is None:
            continue
        entries.append({"id": None, "type": "published", "step": body.get("step"),
                        "request_id": body.get("request_id"), "status": None,
                        "cause": (f"{body.get('kind', 'send')} message to {body.get('agency')}"
                                  if row.exchange == "dispatch" else
                                  f"{body.get('type') or 'status'} event to the tracker"),
                        "detail": {"outbox_row": row.id, "message_id": body.get("message_id"),
                                   "queued_at": records.iso(row.created_at)},
                        "occurred_at": records.iso(row.sent_at), "recorded_at": records.iso(row.sent_at),
                        "lane": "broker", "origin": _ORIGIN["published"]})
    entries.sort(key=lambda e: (e["occurred_at"] or "", e["id"] or 0))
    start = _parse(entries[0]["occurred_at"]) if entries else None
    for e in entries:
        at, recorded = _parse(e["occurred_at"]), _parse(e["recorded_at"])
        e["offset_ms"] = round((at - start).total_seconds() * 1000) if at and start else None
        e["tracker_delay_ms"] = round((recorded - at).total_seconds() * 1000) if at and recorded else None
    return entries


def _parse(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def dag(service: Any, requests: dict[str, Any]) -> dict[str, Any]:
    """Nodes in layers (a step's layer is one more than its deepest dependency) and edges."""
    order = check_dag(service.after)
    layer: dict[str, int] = {}
    for step in order:
        deps = service.steps[step].after
        layer[step] = 1 + max((layer[d] for d in deps), default=-1)
    nodes = []
    for step in order:
        r = requests.get(step)
        nodes.append({"step": step, "title": service.steps[step].title, "agency": service.steps[step].agency,
                      "layer": layer[step], "status": r.status if r else "pending",
                      "attempts": r.attempts if r else 0})
    edges = [{"from": dep, "to": step} for step in order for dep in service.steps[step].after]
    return {"nodes": nodes, "edges": edges}


# --- dead letters ----------------------------------------------------------------------

def _masked_dead_letter(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc, reason=masking.mask_free_text(doc["reason"] or ""),
                what_happened=masking.mask_free_text(doc["what_happened"] or ""))


def open_dead_letters(conn: Connection, catalog: Catalog | None = None, *, agency: str | None = None,
                      reason: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Open dead letters, newest first, filtered by agency and by text in the reason."""
    return [_masked_dead_letter(d) for d in dead_letters.open_documents(
        conn, catalog, agency=agency, reason=reason, limit=limit, newest_first=True)]


# --- agencies and queues -----------------------------------------------------------------

def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def agencies(conn: Connection, settings: Settings, catalog: Catalog, *, minutes: int = 30) -> list[dict[str, Any]]:
    calls = health.agency_calls(conn)
    dead = dict(conn.execute(select(t.dead_letters.c.agency, func.count())
                             .where(t.dead_letters.c.replayed_at.is_(None)).group_by(t.dead_letters.c.agency)).all())
    waiting = dict(conn.execute(select(t.requests.c.agency, func.count())
                                .where(t.requests.c.status.in_(("queued", "sent", "accepted")))
                                .group_by(t.requests.c.agency)).all())
    snap = queues.snapshot(settings, catalog)
    depth = snap.by_agency()
    circuits = circuit_states()
    now = records.now()
    out = []
    for agency in sorted(catalog.agencies.values(), key=lambda a: a.id):
        c = calls.get(agency.id, health.Calls())
        q = depth.get(agency.id)
        rate = c.success_rate
        out.append({
            "success_level": success_level(rate, settings),
            "id": agency.id, "name": agency.name, "adapter": agency.adapter, "decisions": agency.decisions,
            "calls": c.calls, "successes": c.successes, "failures": c.failures,
            "success_rate": None if rate is None else round(rate, 4),
            "p50_ms": _ms(c.percentile(0.5)), "p95_ms": _ms(c.percentile(0.95)),
            "queue_depth": q.messages if q else None, "consumers": q.consumers if q else None,
            "open_requests": waiting.get(agency.id, 0), "dead_letters": dead.get(agency.id, 0),
            "circuit": circuits.get(agency.id, "n/a"),
            "latency": c.series(minutes, now),
        })
    return out


def success_level(rate: float | None, settings: Settings) -> str:
    """``alert`` below the alert threshold, ``warn`` below the warning one, else ``ok``."""
    if rate is None:
        return "none"
    if rate * 100 < settings.ops_success_alert_pct:
        return "alert"
    return "warn" if rate * 100 < settings.ops_success_warn_pct else "ok"


def circuit_states() -> dict[str, str]:
    """Each agency's circuit-breaker state as the workers on this machine last reported it."""
    try:
        from broker.breaker import states

        from ..api.context import ctx
        return states(ctx().settings.state_dir)
    except Exception:  # noqa: BLE001 - a dashboard must render even when the breaker cannot say
        return {}


def queue_documents(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    snap = queues.snapshot(settings, catalog)
    return {"broker_ok": snap.ok, "detail": snap.detail, "queues": [q.document() for q in snap.queues]}


# --- search ------------------------------------------------------------------------------

def search(conn: Connection, catalog: Catalog, q: str, *, limit: int = 50) -> dict[str, Any]:
    """Find applications by id, request id, front-office reference, agency reference or NIK."""
    q = q.strip()
    if not q:
        return {"query": "", "kind": None, "results": []}
    compact = masking.NIK_SEPARATORS.sub("", q)  # as the NIKs were written to application_niks
    if masking.NIK.fullmatch(compact):
        return {"query": masking.mask_nik(compact), "kind": "nik",
                "results": _by_nik(conn, catalog, compact, limit=limit)}
    matched: dict[str, str] = {}
    for (app_id,) in conn.execute(select(t.applications.c.id).where(
            or_(t.applications.c.id == q, t.applications.c.reference == masking.mask_free_text(q))).limit(limit)):
        matched.setdefault(app_id, "id" if app_id == q else "reference")
    for app_id, agency_ref in conn.execute(select(t.requests.c.application_id, t.requests.c.agency_reference).where(
            or_(t.requests.c.id == q, t.requests.c.agency_reference == q)).limit(limit)):
        matched.setdefault(app_id, "agency_reference" if agency_ref == q else "request_id")
    if not matched and len(q) >= 8 and q.startswith("app_"):
        # Newest first: ids begin with the time they were made (core/domain/ids.py).  ``%`` and
        # ``_`` in the query are the characters themselves, not LIKE wildcards.
        for (app_id,) in conn.execute(select(t.applications.c.id).where(t.applications.c.id.startswith(q, autoescape=True))
                                      .order_by(t.applications.c.id.desc()).limit(limit)):
            matched.setdefault(app_id, "id prefix")
    return {"query": masking.mask_free_text(q), "kind": "text", "results": _with_match(conn, catalog, matched)}


def _with_match(conn: Connection, catalog: Catalog, matched: dict[str, str]) -> list[dict[str, Any]]:
    if not matched:
        return []
    apps = list(conn.execute(select(t.applications).where(t.applications.c.id.in_(list(matched)))
                             .order_by(t.applications.c.created_at.desc())))
    return [{**s, "matched": matched[s["id"]]} for s in _summaries(conn, apps, catalog)]


def _by_nik(conn: Connection, catalog: Catalog, nik: str, *, limit: int) -> list[dict[str, Any]]:
    """One indexed lookup of the NIK's keyed hash in ``application_niks``, newest applications
    first: the hash is the only form of the NIK that reaches the SQL."""
    apps, niks = t.applications, t.application_niks
    rows = list(conn.execute(select(apps).join(niks, niks.c.application_id == apps.c.id)
                             .where(niks.c.nik_hash == masking.nik_hash(nik))
                             .order_by(apps.c.created_at.desc(), apps.c.id.desc()).limit(limit)))
    return [{**s, "matched": "nik"} for s in _summaries(conn, rows, catalog)]
