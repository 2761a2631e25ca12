"""Turning a bundle into agency requests: initial statuses, released steps, dispatch messages.

Used by the gateway at submission and by the tracker when a step's dependencies are
decided; both call it inside the transaction that changes the requests, so a step is
queued exactly when its dispatch message is written to the outbox.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from core.domain.dag import advance
from core.domain.errors import MappingError
from core.domain.mapping import apply_mapping
from core.domain.status import RequestStatus
from core.model import Service

from .store import records

DISPATCH = "dispatch"  # exchange name, without the namespace prefix


def traceparent(application_id: str, span_id: str | None = None) -> str:
    """A W3C traceparent whose trace id is derived from the application id (``span_id``:
    16 random hex digits, made here when not given)."""
    trace_id = application_id.split("_")[-1][:32].ljust(32, "0")
    return f"00-{trace_id}-{span_id or secrets.token_hex(8)}-01"


def mapping_context(app: Any, requests: list[Any]) -> dict[str, Any]:
    return {
        "data": app.data,
        "application": {"id": app.id, "service": app.service, "reference": app.reference},
        "steps": {r.step: {"reference": r.agency_reference, "output": r.output or {}, "status": r.status}
                  for r in requests},
    }


def dispatch_message(*, app: Any, request: Any, kind: str = "send", payload: dict[str, Any] | None = None,
                     reference: str | None = None, maybe_sent: bool = False, message_id: str | None = None,
                     span_id: str | None = None) -> dict[str, Any]:
    """The outbox row (exchange, routing key, body, headers) of one dispatch message for ``request``.

    ``message_id`` and the traceparent's ``span_id`` are made here unless the caller has them.
    """
    body = {
        "message_id": message_id or records.new_id("msg"),
        "kind": kind,
        "request_id": request.id,
        "application_id": app.id,
        "service": app.service,
        "step": request.step,
        "agency": request.agency,
        "operation": request.operation,
        "payload": payload or {},
        "reference": reference,
    }
    headers = {"application_id": app.id, "request_id": request.id, "traceparent": traceparent(app.id, span_id),
               "x-attempt": 1}
    if maybe_sent:
        headers["x-maybe-sent"] = True
    return {"exchange": DISPATCH, "routing_key": request.agency, "body": body, "headers": headers}


def dispatch(conn: Connection, *, app: Any, request: Any, kind: str = "send",
             payload: dict[str, Any] | None = None, reference: str | None = None,
             maybe_sent: bool = False) -> None:
    """Write one dispatch message for ``request`` to the outbox.

    ``maybe_sent`` (a replay) tells the worker the agency may have it already: look it up first.
    """
    records.enqueue(conn, **dispatch_message(app=app, request=request, kind=kind, payload=payload,
                                             reference=reference, maybe_sent=maybe_sent))


_STATUS = {s.value: s for s in RequestStatus}  # ``RequestStatus(value)`` without the enum's call


def next_changes(service: Service, app: Any, requests: list[Any]) -> list[tuple[Any, RequestStatus, str | None,
                                                                                dict[str, Any] | None]]:
    """One round of the DAG: ``(request, new status, reason, payload)`` for each step that moves now.

    Pending steps whose dependencies are all approved are queued with their mapped
    payload; a step whose request mapping fails (an earlier step's answer lacks a field)
    fails at once with the reason, rather than sending the agency an incomplete request;
    steps that can no longer run are skipped.
    """
    statuses = {r.step: _STATUS.get(r.status) or RequestStatus(r.status) for r in requests}
    changes = advance(service.after, statuses)
    if not changes:
        return []
    by_step = {r.step: r for r in requests}
    context = mapping_context(app, requests)
    out = []
    for step, new in changes.items():
        reason = None
        payload = None
        if new is RequestStatus.QUEUED:
            try:
                payload = apply_mapping(service.steps[step].compiled, context)
            except MappingError as exc:
                new, reason = RequestStatus.FAILED, f"request mapping failed: {exc}"
        elif new is RequestStatus.SKIPPED:
            failed_deps = [d for d in service.steps[step].after if statuses[d] is not RequestStatus.APPROVED]
            reason = f"dependency {', '.join(failed_deps)} did not succeed"
        out.append((by_step[step], new, reason, payload))
    return out


def event_detail(service: Service, step: str, reason: str | None, payload: dict[str, Any] | None) -> dict[str, Any]:
    """The detail of a step's status event: the reason, and which mapped fields came out null.

    A field whose expression finds nothing is left out of the agency's request (DESIGN §4);
    the history says so, so "why did the agency not get the phone number" has an answer.
    """
    detail: dict[str, Any] = {"reason": reason} if reason else {}
    if payload is not None:
        left_out = [name for name in service.steps[step].compiled if name not in payload]
        if left_out:
            detail["left_out"] = left_out
    return detail


# Built once; the columns to set come from the parameters.


def release_ready_steps(conn: Connection, service: Service, app: Any, requests: list[Any],
                        *, cause: str, write: Callable[[Any, dict[str, Any]], None] | None = None) -> list[Any]:
    """Queue the pending steps whose dependencies are all approved; skip those that cannot run.

    Returns the requests as they are after the changes: re-read from the store, or, with
    ``write`` (the tracker's batch, which owns copies of the rows and writes them later),
    the same objects, which ``write(request, values)`` brought up to date.
    """
    while True:
        changes = next_changes(service, app, requests)
        if not changes:
            return requests
        moment = records.now()
        for request, new, reason, payload in changes:
            values = {"status": new.value, "reason": reason, "updated_at": moment}
            if write is None:
                conn.execute(records.UPDATE_REQUEST, dict(values, request_row_id=request.id))
            else:
                write(request, values)
            records.add_event(conn, application_id=app.id, request_id=request.id, step=request.step,
                              type="status", status=new.value, cause=cause,
                              detail=event_detail(service, request.step, reason, payload))
            if new is RequestStatus.QUEUED:
                dispatch(conn, app=app, request=request, payload=payload)
        if write is None:
            requests = records.request_rows(conn, app.id)
