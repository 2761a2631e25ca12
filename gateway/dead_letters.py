"""Dead letters: the requests that failed after every retry, kept for operators to replay.

A replay puts the request back to ``queued`` with its attempts reset, records that in
the history and writes a fresh dispatch message, all in one transaction that also stamps
the dead letter as replayed: replaying the same dead letter twice sends it once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select, update

from core.domain.errors import NotFound
from core.domain.status import RequestStatus, can_transition
from core.model import Catalog

from .store import records
from .store import tables as t
from .tracker import settle
from .workflow import dispatch, release_ready_steps


def document(row: Any) -> dict[str, Any]:
    return {"id": row.id, "request_id": row.request_id, "application_id": row.application_id,
            "agency": row.agency, "reason": row.reason, "attempts": row.attempts,
            "step": (row.body or {}).get("step"), "created_at": records.iso(row.created_at),
            "replayed_at": records.iso(row.replayed_at)}


def list_open(engine: Engine, *, agency: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
    query = select(t.dead_letters).where(t.dead_letters.c.replayed_at.is_(None))
    if agency:
        query = query.where(t.dead_letters.c.agency == agency)
    with engine.connect().execution_options(readonly=True) as conn:
        return [document(r) for r in conn.execute(query.order_by(t.dead_letters.c.id).limit(limit))]


def replay(engine: Engine, catalog: Catalog, *, ids: list[int] | None = None, agency: str | None = None,
           cause: str) -> list[int]:
    """Replay open dead letters chosen by id, by agency, or all (neither given)."""
    query = select(t.dead_letters.c.id).where(t.dead_letters.c.replayed_at.is_(None))
    if ids is not None:
        query = query.where(t.dead_letters.c.id.in_(ids))
    if agency:
        query = query.where(t.dead_letters.c.agency == agency)
    with engine.connect().execution_options(readonly=True) as conn:
        chosen = list(conn.execute(query.order_by(t.dead_letters.c.id)).scalars())
    if ids is not None and not chosen:
        raise NotFound(f"no open dead letter {', '.join(map(str, ids))}")
    done = []
    for dead_id in chosen:
        with engine.begin() as conn:
            if _replay_one(conn, catalog, dead_id, cause):
                done.append(dead_id)
    return done


def _replay_one(conn, catalog: Catalog, dead_id: int, cause: str) -> bool:
    dead = conn.execute(select(t.dead_letters).where(t.dead_letters.c.id == dead_id)).first()
    if dead is None or dead.replayed_at is not None:
        return False
    moment = records.now()
    conn.execute(update(t.dead_letters).where(t.dead_letters.c.id == dead_id).values(replayed_at=moment))
    app = records.application_row(conn, dead.application_id, lock=True)
    request = conn.execute(select(t.requests).where(t.requests.c.id == dead.request_id)).first()
    if app is None or request is None or app.cancel_requested:
        return True  # nothing to put back; the record is closed
    if not can_transition(RequestStatus(request.status), RequestStatus.QUEUED, replay=True):
        return True  # decided meanwhile (a late outcome arrived): nothing to send
    conn.execute(update(t.requests).where(t.requests.c.id == request.id)
                 .values(status=RequestStatus.QUEUED.value, attempts=0, reason=None, updated_at=moment))
    records.add_event(conn, application_id=app.id, request_id=request.id, step=request.step, type="replay",
                      status=RequestStatus.QUEUED.value, cause=cause, detail={"dead_letter": dead_id})
    # The agency may have filed it after all (an answer lost in a timeout): look it up first.
    dispatch(conn, app=app, request=request, payload=(dead.body or {}).get("payload"), maybe_sent=True)
    # Steps skipped because this one failed may run after all: back to pending, and the
    # DAG decides again.  (The one sanctioned way out of ``skipped``, like replay's own.)
    conn.execute(update(t.requests).where(t.requests.c.application_id == app.id,
                                          t.requests.c.status == RequestStatus.SKIPPED.value)
                 .values(status=RequestStatus.PENDING.value, reason=None, updated_at=moment))
    service = catalog.services[app.service]
    requests = release_ready_steps(conn, service, app, records.request_rows(conn, app.id), cause=cause)
    settle(conn, service, app, requests, cause=cause)
    return True
