"""Submitting, reading and cancelling applications: the gateway's side of the workflow."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import jsonschema
from sqlalchemy import Connection, Engine, insert, update
from sqlalchemy.exc import IntegrityError

from .catalog import Catalog, Service
from .clients import Client
from .domain.errors import Conflict, NotFound, ValidationFailed
from .domain.status import ApplicationStatus, RequestStatus
from .store import records
from .store import tables as t
from .workflow import dispatch, release_ready_steps

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
    if idempotency_key:
        existing = _by_idempotency_key(engine, client, idempotency_key, digest, catalog)
        if existing is not None:
            return existing, False
    moment = records.now()
    app_id = records.new_id("app")
    try:
        with engine.begin() as conn:
            conn.execute(insert(t.applications).values(
                id=app_id, client_id=client.id, service=service.id, service_version=str(service.version),
                status=ApplicationStatus.IN_PROGRESS.value, reference=body.get("reference"), data=body["data"],
                idempotency_key=idempotency_key, request_hash=digest, cancel_requested=False,
                created_at=moment, updated_at=moment, due_at=_due_at(service, moment)))
            conn.execute(insert(t.requests), [
                {"id": records.new_id("req"), "application_id": app_id, "step": name, "agency": step.agency,
                 "operation": step.operation, "status": RequestStatus.PENDING.value, "attempts": 0,
                 "updated_at": moment}
                for name, step in service.steps.items()])
            app = records.application_row(conn, app_id)
            records.add_event(conn, application_id=app_id, type="submitted", status=app.status,
                              cause=f"client {client.name}",
                              detail={"service": service.id, "version": str(service.version),
                                      "reference": body.get("reference")})
            requests = release_ready_steps(conn, service, app, records.request_rows(conn, app_id),
                                           cause="submitted")
            from .tracker import (
                settle,  # the combined status may already be final (all skipped)
            )
            settle(conn, service, app, requests, cause="submitted")
            return _document(conn, app_id, catalog), True
    except IntegrityError:
        # Two submissions with the same key raced; the loser answers like a repeat.
        if idempotency_key:
            existing = _by_idempotency_key(engine, client, idempotency_key, digest, catalog)
            if existing is not None:
                return existing, False
        raise


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
