"""Dead letters: the requests a worker gave up on, kept for operators to replay.

A replay puts the request back to ``queued`` with its attempts reset, records that in
the history and writes a fresh dispatch message, all in one transaction that also stamps
the dead letter as replayed: replaying the same dead letter twice sends it once.

A bulk replay (``plan`` then ``replay_paced``) says first what it would do, sends at a set
rate, and then ``verify`` checks in the history that a worker really took each message,
instead of trusting the count of replays (camunda/camunda#63192).

How many attempts a request took has one source: the request row, whose ``attempts`` the
tracker raises with every worker event (the dead letter's own event included).  Every view
of a dead letter reads it from there.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from core.domain.errors import NotFound
from core.domain.status import RequestStatus, can_transition
from core.model import Catalog

from .store import records
from .store import tables as t
from .tracker import settle
from .workflow import dispatch, release_ready_steps

# Events that only a worker (or the agency, through it) causes: one after a replay proves
# the replayed message reached a worker.
WORKER_EVENTS = ("attempt", "outcome", "retry", "failed", "deferred", "poll", "callback")


def what_happened(*, kind: str, attempts: int, max_attempts: int | None, reason: str) -> str:
    """One sentence for an operator: retries exhausted, or refused at once, or stopped by the broker."""
    tries = f"{attempts} attempt{'' if attempts == 1 else 's'}"
    if kind == "poll":
        return f"no decision while polling after {tries}: {reason}"
    if reason.startswith("dead-lettered by RabbitMQ"):  # the tracker's words for x-delivery-limit
        return reason
    if max_attempts is not None and attempts >= max_attempts:
        return f"failed after every retry ({tries} of {max_attempts}): {reason}"
    return f"refused permanently after {tries}: {reason}"


def document(row: Any, *, attempts: int | None = None, max_attempts: int | None = None) -> dict[str, Any]:
    """A dead letter as JSON; ``attempts`` is the request row's count when the caller read it."""
    body = row.body or {}
    kind = body.get("kind", "send")
    count = row.attempts if attempts is None or kind == "cancel" else attempts
    return {"id": row.id, "request_id": row.request_id, "application_id": row.application_id,
            "agency": row.agency, "reason": row.reason, "attempts": count, "kind": kind,
            "what_happened": what_happened(kind=kind, attempts=count, max_attempts=max_attempts,
                                           reason=row.reason or ""),
            "step": body.get("step"), "created_at": records.iso(row.created_at),
            "replayed_at": records.iso(row.replayed_at)}


def _open(*, agency: str | None = None, reason: str | None = None, ids: list[int] | None = None) -> Any:
    """Open dead letters with their request's attempt count, filtered by agency, reason text, ids."""
    d = t.dead_letters
    query = (select(d, t.requests.c.attempts.label("request_attempts"))
             .outerjoin(t.requests, t.requests.c.id == d.c.request_id).where(d.c.replayed_at.is_(None)))
    if agency:
        query = query.where(d.c.agency == agency)
    if reason:
        query = query.where(func.lower(d.c.reason).contains(reason.lower(), autoescape=True))
    if ids is not None:
        query = query.where(d.c.id.in_(ids))
    return query


def open_documents(conn: Connection, catalog: Catalog | None = None, *, agency: str | None = None,
                   reason: str | None = None, limit: int = 500, newest_first: bool = False) -> list[dict[str, Any]]:
    order = t.dead_letters.c.id.desc() if newest_first else t.dead_letters.c.id
    rows = conn.execute(_open(agency=agency, reason=reason).order_by(order).limit(limit))
    agencies = catalog.agencies if catalog else {}
    return [document(r, attempts=r.request_attempts,
                     max_attempts=agencies[r.agency].max_attempts if r.agency in agencies else None) for r in rows]


def list_open(engine: Engine, *, agency: str | None = None, reason: str | None = None, limit: int = 500,
              catalog: Catalog | None = None) -> list[dict[str, Any]]:
    with engine.connect().execution_options(readonly=True) as conn:
        return open_documents(conn, catalog, agency=agency, reason=reason, limit=limit)


def plan(conn: Connection, *, agency: str | None = None, reason: str | None = None, ids: list[int] | None = None,
         limit: int = 500) -> dict[str, Any]:
    """The dry run of a bulk replay: which open dead letters it would replay, counted per agency."""
    query = _open(agency=agency, reason=reason, ids=ids).order_by(t.dead_letters.c.id).limit(limit)
    rows = list(conn.execute(query))
    return {"would_replay": len(rows), "by_agency": dict(Counter(r.agency for r in rows)),
            "ids": [r.id for r in rows]}


def replay(engine: Engine, catalog: Catalog, *, ids: list[int] | None = None, agency: str | None = None,
           cause: str) -> list[int]:
    """Replay open dead letters chosen by id, by agency, or all (neither given)."""
    with engine.connect().execution_options(readonly=True) as conn:
        chosen = list(conn.execute(_open(agency=agency, ids=ids).order_by(t.dead_letters.c.id)).scalars())
    if ids is not None and not chosen:
        raise NotFound(f"no open dead letter {', '.join(map(str, ids))}")
    return [r["id"] for r in replay_paced(engine, catalog, chosen, cause=cause) if r["result"] != "already replayed"]


def replay_paced(engine: Engine, catalog: Catalog, ids: list[int], *, cause: str, rate: float | None = None,
                 detail: dict[str, Any] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> list[dict[str, Any]]:
    """Replay ``ids`` one transaction each, at most ``rate`` per second (None: at once).

    Each result says ``queued`` (sent again), ``closed`` (nothing to send: decided or
    cancelled meanwhile) or ``already replayed`` (by someone else a moment ago)."""
    results = []
    start = clock()
    for n, dead_id in enumerate(ids):
        if rate:
            wait = start + n / rate - clock()
            if wait > 0:
                sleep(wait)
        with engine.begin() as conn:
            results.append(_replay_one(conn, catalog, dead_id, cause, detail or {}))
    return results


def _replay_one(conn: Connection, catalog: Catalog, dead_id: int, cause: str, extra: dict[str, Any]) -> dict[str, Any]:
    dead = conn.execute(select(t.dead_letters).where(t.dead_letters.c.id == dead_id)).first()
    result = {"id": dead_id, "request_id": dead.request_id if dead else None,
              "application_id": dead.application_id if dead else None, "agency": dead.agency if dead else None}
    if dead is None or dead.replayed_at is not None:
        return dict(result, result="already replayed")
    moment = records.now()
    conn.execute(update(t.dead_letters).where(t.dead_letters.c.id == dead_id).values(replayed_at=moment))
    app = records.application_row(conn, dead.application_id, lock=True)
    request = conn.execute(select(t.requests).where(t.requests.c.id == dead.request_id)).first()
    if app is None or request is None or app.cancel_requested:
        return dict(result, result="closed")  # nothing to put back; the record is closed
    if not can_transition(RequestStatus(request.status), RequestStatus.QUEUED, replay=True):
        return dict(result, result="closed")  # decided meanwhile (a late outcome arrived): nothing to send
    conn.execute(update(t.requests).where(t.requests.c.id == request.id)
                 .values(status=RequestStatus.QUEUED.value, attempts=0, reason=None, updated_at=moment))
    records.add_event(conn, application_id=app.id, request_id=request.id, step=request.step, type="replay",
                      status=RequestStatus.QUEUED.value, cause=cause[:200],
                      detail={"dead_letter": dead_id, **extra})
    # The agency may have filed it after all (an answer lost in a timeout): look it up first.
    dispatch(conn, app=app, request=request, payload=(dead.body or {}).get("payload"), maybe_sent=True)
    # Steps skipped because this one failed may run after all: back to pending, and the
    # DAG decides again.  (The one sanctioned way out of ``skipped``, like replay's own.)
    conn.execute(update(t.requests).where(t.requests.c.application_id == app.id,
                                          t.requests.c.status == RequestStatus.SKIPPED.value)
                 .values(status=RequestStatus.PENDING.value, reason=None, updated_at=moment))
    service = catalog.services[app.service]
    requests = release_ready_steps(conn, service, app, records.request_rows(conn, app.id), cause=cause[:200])
    settle(conn, service, app, requests, cause=cause[:200])
    return dict(result, result="queued")


def verify(engine: Engine, results: list[dict[str, Any]], *, wait: float, poll: float = 0.5,
           sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic) -> list[dict[str, Any]]:
    """For every ``queued`` replay, wait up to ``wait`` seconds for a worker event after it.

    ``result`` becomes ``went through`` (the agency answered, or the call is under way),
    ``retrying`` or ``deferred`` (a worker took it; the agency is not well yet), ``failed
    again`` (dead-lettered anew), or ``unconfirmed`` (no worker touched it in time: the
    replay was written, yet nothing shows it was delivered)."""
    pending = {r["request_id"]: r for r in results if r["result"] == "queued"}
    deadline = clock() + wait
    while True:
        with engine.connect().execution_options(readonly=True) as conn:
            for request_id, seen in _worker_events_after_replay(conn, list(pending)).items():
                pending.pop(request_id).update(seen)
        if not pending or clock() >= deadline:
            break
        sleep(min(poll, max(0.0, deadline - clock())))
    for r in pending.values():
        r.update(result="unconfirmed", detail=f"no worker took it within {wait:g} s")
    return results


def _worker_events_after_replay(conn: Connection, request_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The first worker event after each request's latest replay, as a result."""
    if not request_ids:
        return {}
    e = t.events
    replayed = dict(conn.execute(select(e.c.request_id, func.max(e.c.id)).where(
        e.c.request_id.in_(request_ids), e.c.type == "replay").group_by(e.c.request_id)).all())
    found: dict[str, dict[str, Any]] = {}
    rows = conn.execute(select(e.c.id, e.c.request_id, e.c.type, e.c.detail)
                        .where(e.c.request_id.in_(request_ids), e.c.type.in_(WORKER_EVENTS)).order_by(e.c.id))
    statuses = dict(conn.execute(select(t.requests.c.id, t.requests.c.status)
                                 .where(t.requests.c.id.in_(request_ids))).all())
    for row in rows:
        if row.request_id in found or row.id <= replayed.get(row.request_id, 0):
            continue
        detail = row.detail or {}
        result = {"retry": "retrying", "deferred": "deferred", "failed": "failed again"}.get(row.type, "went through")
        found[row.request_id] = {"result": result, "status": statuses.get(row.request_id),
                                 "detail": detail.get("reason") or f"{row.type} event"}
    return found
