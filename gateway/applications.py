"""Submitting, reading and cancelling applications: the gateway's side of the workflow."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from types import SimpleNamespace
from typing import Any

import jsonschema
from sqlalchemy import Connection, Engine, insert, update
from sqlalchemy.exc import IntegrityError

from . import notifier
from .catalog import Catalog, Service
from .clients import Client
from .domain.errors import Conflict, NotFound, ValidationFailed
from .domain.status import ApplicationStatus, RequestStatus, combined_status
from .store import records
from .store import tables as t
from .workflow import dispatch, dispatch_message, next_changes

_validators: dict[int, jsonschema.protocols.Validator] = {}


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    key = id(schema)
    if key not in _validators:
        _validators[key] = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    return _validators[key]


def schema_errors(schema: dict[str, Any], document: Any, *, prefix: str = "") -> list[dict[str, str]]:
    """``[{path, message}]`` for every way ``document`` breaks ``schema``; paths are JSON Pointers."""
    errors = []
    for error in sorted(_validator(schema).iter_errors(document), key=lambda e: list(e.absolute_path)):
        path = prefix + "".join(f"/{p}" for p in error.absolute_path)
        message = error.message if len(error.message) < 300 else error.message[:297] + "..."
        errors.append({"path": path or "/", "message": message})
    return errors


def body_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(records.canonical(body).encode()).hexdigest()


def _due_at(service: Service, start: dt.datetime) -> dt.datetime | None:
    if service.sla_hours:
        return start + dt.timedelta(hours=service.sla_hours)
    if service.sla_working_days:
        days, due = service.sla_working_days, start
        while days > 0:
            due += dt.timedelta(days=1)
            if due.weekday() < 5:
                days -= 1
        return due
    return None


def submit(engine: Engine, catalog: Catalog, client: Client, body: dict[str, Any],
           idempotency_key: str | None) -> tuple[dict[str, Any], bool]:
    """Store a new application with its requests and first dispatch messages, in one transaction.

    Returns the application document and whether it was created now (False when the same
    ``Idempotency-Key`` and body were seen before).  Raises ``ValidationFailed`` for bad
    data and ``Conflict`` when the key was used with another body.
    """
    service = catalog.services[body["service"]]
    errors = schema_errors(service.input_schema, body["data"], prefix="/data")
    if errors:
        raise ValidationFailed(errors)
    digest = body_hash(body)
    try:
        with engine.begin() as conn:
            return _store_new(conn, catalog, service, client, body, idempotency_key, digest), True
    except IntegrityError:
        # The key was used before (or two submissions with it raced): answer like a repeat,
        # or 409 when the body differs.  Trying the insert first saves a read on every new
        # submission; repeats are the rare case.
        if idempotency_key:
            existing = _by_idempotency_key(engine, client, idempotency_key, digest, catalog)
            if existing is not None:
                return existing, False
        raise


def _store_new(conn: Connection, catalog: Catalog, service: Service, client: Client, body: dict[str, Any],
               idempotency_key: str | None, digest: str) -> dict[str, Any]:
    """Write the application, its requests, its history and its first dispatch messages.

    Everything about a new application is known here, so the DAG is advanced in memory
    (``workflow.next_changes``, the same rules the tracker applies) and each table gets one
    multi-row insert: a handful of statements instead of one per step, event and message.
    The events are hash-chained exactly as ``records.add_event`` chains them.
    """
    moment = records.now()
    app = SimpleNamespace(
        id=records.new_id("app"), client_id=client.id, service=service.id, service_version=str(service.version),
        status=ApplicationStatus.IN_PROGRESS.value, reference=body.get("reference"), data=body["data"],
        idempotency_key=idempotency_key, request_hash=digest, cancel_requested=False,
        created_at=moment, updated_at=moment, due_at=_due_at(service, moment))
    conn.execute(insert(t.applications), [vars(app)])  # parameters, not .values(): a cached statement
    requests = [SimpleNamespace(id=records.new_id("req"), application_id=app.id, step=name, agency=step.agency,
                                operation=step.operation, status=RequestStatus.PENDING.value,
                                agency_reference=None, reason=None, attempts=0, output=None, updated_at=moment)
                for name, step in service.steps.items()]
    history = _History(app.id)
    history.add(type="submitted", status=app.status, cause=f"client {client.name}",
                detail={"service": service.id, "version": str(service.version), "reference": body.get("reference")})
    messages = []
    while changes := next_changes(service, app, requests):
        for request, new, reason, payload in changes:
            request.status, request.reason = new.value, reason
            history.add(request_id=request.id, step=request.step, type="status", status=new.value,
                        cause="submitted", detail={"reason": reason} if reason else {})
            if new is RequestStatus.QUEUED:
                messages.append(dict(dispatch_message(app=app, request=request, payload=payload),
                                     created_at=records.now()))
    # (``output`` left out: a JSON column would store None as JSON null, not SQL NULL.)
    conn.execute(insert(t.requests), [{k: v for k, v in vars(r).items() if k != "output"} for r in requests])
    # The combined status may already be final (every step failed its mapping or was skipped).
    combined = combined_status((RequestStatus(r.status) for r in requests), cancelled=False)
    if combined.value != app.status:
        app.status = combined.value
        conn.execute(update(t.applications).where(t.applications.c.id == app.id).values(status=app.status))
        history.add(type="application", status=app.status, cause="submitted")
        notifier.enqueue(conn, app, app.status, cause="submitted")
    conn.execute(insert(t.events), history.rows)
    if messages:
        conn.execute(insert(t.outbox), messages)
        records.notify_outbox(conn)
    return records.application_document(app, requests, order=service.order)


class _History:
    """A new application's first events, hash-chained in memory (as ``records.add_event`` does)."""

    def __init__(self, application_id: str):
        self.application_id = application_id
        self.prev = records.GENESIS
        self.rows: list[dict[str, Any]] = []

    def add(self, *, type: str, status: str | None = None, request_id: str | None = None,
            step: str | None = None, detail: dict[str, Any] | None = None, cause: str | None = None) -> None:
        occurred_at = records.now()
        row = {"event_id": uuid.uuid4().hex, "application_id": self.application_id, "request_id": request_id,
               "step": step, "type": type, "status": status, "detail": detail or {}, "cause": cause}
        digest = records.event_hash(self.prev, row, occurred_at)
        self.rows.append(dict(row, occurred_at=occurred_at, recorded_at=occurred_at, prev_hash=self.prev,
                              hash=digest))
        self.prev = digest


def _by_idempotency_key(engine: Engine, client: Client, key: str, digest: str,
                        catalog: Catalog) -> dict[str, Any] | None:
    from sqlalchemy import select
    with engine.connect().execution_options(readonly=True) as conn:
        row = conn.execute(select(t.applications.c.id, t.applications.c.request_hash).where(
            t.applications.c.client_id == client.id, t.applications.c.idempotency_key == key)).first()
        if row is None:
            return None
        if row.request_hash != digest:
            raise Conflict(f"Idempotency-Key {key!r} was already used with a different request body")
        return _document(conn, row.id, catalog)


def _document(conn: Connection, app_id: str, catalog: Catalog, client_id: str | None = None) -> dict[str, Any]:
    app = records.application_row(conn, app_id, client_id=client_id)
    if app is None:
        raise NotFound(f"no application {app_id}")
    service = catalog.services.get(app.service)
    return records.application_document(app, records.request_rows(conn, app_id),
                                        order=service.order if service else ())


def read(engine: Engine, catalog: Catalog, client: Client, app_id: str) -> dict[str, Any]:
    with engine.connect().execution_options(readonly=True) as conn:
        return _document(conn, app_id, catalog, client_id=client.id)


def cancel(engine: Engine, catalog: Catalog, client: Client, app_id: str) -> dict[str, Any]:
    """Cancel what has not been decided (DESIGN §3).

    Steps not yet sent to an agency are cancelled at once; steps an agency holds get a
    cancel message (the worker uses the adapter's ``cancel`` where the agency supports it,
    and records a cancel-requested event otherwise) and follow the agency's answer.
    """
    with engine.begin() as conn:
        app = records.application_row(conn, app_id, client_id=client.id, lock=True)
        if app is None:
            raise NotFound(f"no application {app_id}")
        if ApplicationStatus(app.status).terminal:
            raise Conflict(f"application {app_id} is already {app.status}")
        moment = records.now()
        conn.execute(update(t.applications).where(t.applications.c.id == app_id)
                     .values(cancel_requested=True, updated_at=moment))
        records.add_event(conn, application_id=app_id, type="cancel", cause=f"client {client.name}",
                          detail={"requested": True})
        for request in records.request_rows(conn, app_id):
            status = RequestStatus(request.status)
            if status in (RequestStatus.PENDING, RequestStatus.QUEUED):
                conn.execute(update(t.requests).where(t.requests.c.id == request.id)
                             .values(status=RequestStatus.CANCELLED.value, reason="cancelled by the applicant",
                                     updated_at=moment))
                records.add_event(conn, application_id=app_id, request_id=request.id, step=request.step,
                                  type="status", status=RequestStatus.CANCELLED.value, cause="cancel")
            elif status in (RequestStatus.SENT, RequestStatus.ACCEPTED):
                dispatch(conn, app=app, request=request, kind="cancel", reference=request.agency_reference)
        app = records.application_row(conn, app_id)
        service = catalog.services[app.service]
        from .tracker import settle
        settle(conn, service, app, records.request_rows(conn, app_id), cause="cancel")
        return _document(conn, app_id, catalog)
