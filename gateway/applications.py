"""Submitting, reading and cancelling applications: the gateway's side of the workflow."""

from __future__ import annotations

import datetime as dt
import hashlib
from types import SimpleNamespace
from typing import Any

import jsonschema
from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import IntegrityError

from core.domain.calendar import WorkingCalendar
from core.domain.errors import Conflict, NotFound, ValidationFailed
from core.domain.ids import uuid7_hex
from core.domain.status import ApplicationStatus, RequestStatus, combined_status
from core.domain.text import text_problems
from core.masking import mask_free_text, nik_hashes, pii_values
from core.model import Catalog, Service

from . import notifier
from .clients import Client
from .documents.check import attach, document_problems, submitted_detail
from .store import records, sqlite
from .store import tables as t
from .store.chain import EventChain, event_row
from .workflow import dispatch, dispatch_message, event_detail, next_changes

# One validator per schema, built once (building one costs more than validating a bundle),
# as jsonschema intends.  Keyed by identity, and the schema is kept with its validator so that
# an id reused by another dict (a catalog loaded again) can never pick up a stale validator.
_validators: dict[int, tuple[dict[str, Any], jsonschema.protocols.Validator]] = {}


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    entry = _validators.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = _validators[id(schema)] = (
            schema, jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()))
    return entry[1]


def schema_errors(schema: dict[str, Any], document: Any, *, prefix: str = "") -> list[dict[str, str]]:
    """``[{path, message}]`` for every way ``document`` breaks ``schema``; paths are JSON Pointers."""
    errors = []
    for error in sorted(_validator(schema).iter_errors(document), key=lambda e: list(e.absolute_path)):
        segments = list(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            # Point at the missing field itself, not at the object that lacks it.
            segments += [name for name in error.validator_value
                         if name not in error.instance and error.message == f"{name!r} is a required property"]
        path = prefix + "".join(f"/{p}" for p in segments)
        message = error.message if len(error.message) < 300 else error.message[:297] + "..."
        errors.append({"path": path or "/", "message": message})
    return errors


def body_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(records.canonical(body).encode()).hexdigest()


def _due_at(service: Service, start: dt.datetime, calendar: WorkingCalendar) -> dt.datetime | None:
    """When the service's target ends: hours as they pass, working days by the hall's calendar."""
    if service.sla_hours:
        return start + dt.timedelta(hours=service.sla_hours)
    if service.sla_working_days:
        return calendar.add_working_days(start, service.sla_working_days)
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
    errors += text_problems(body["data"], "/data")
    if isinstance(body.get("reference"), str):
        errors += text_problems(body["reference"], "/reference", name_like=True)
    documents: dict[str, Any] = {}
    if body.get("documents") is not None or service.documents:  # else nothing to read: no connection
        with engine.connect().execution_options(readonly=True) as conn:
            errors += document_problems(conn, service, client.id, body.get("documents"))
            documents = {} if errors else submitted_detail(conn, client.id, body.get("documents"))
    if errors:
        raise ValidationFailed(errors)
    new = _NewApplication(service, client, body, idempotency_key, body_hash(body), catalog.calendar, documents)
    try:
        _write(engine, new.writes())
    except IntegrityError:
        # The key was used before (or two submissions with it raced): answer like a repeat,
        # or 409 when the body differs.  Trying the insert first saves a read on every new
        # submission; repeats are the rare case.
        if idempotency_key:
            existing = _by_idempotency_key(engine, client, idempotency_key, new.app.request_hash, catalog)
            if existing is not None:
                return existing, False
        raise
    return new.document, True


def _write(engine: Engine, writes: sqlite.Writes) -> None:
    """One transaction: shared with the submissions arriving meanwhile on SQLite (group commit)."""
    if engine.dialect.name == "sqlite":
        sqlite.group_commit(engine).write(writes)
    else:
        with engine.begin() as conn:
            writes.apply(conn)


# ``output`` left out of a new request: a JSON column would store None as JSON null.
_REQUEST_COLUMNS = ("id", "application_id", "step", "agency", "operation", "status", "agency_reference", "reason",
                    "attempts", "updated_at")


class _NewApplication:
    """A new application's rows (application, requests, history, first dispatch messages,
    the keyed hashes of its NIKs) and its document, all worked out in memory before the
    write transaction starts.

    Everything about a new application is known up front, so the DAG is advanced in memory
    (``workflow.next_changes``, the same rules the tracker applies) and the events are
    hash-chained by the store's one chain writer (``store/chain.py``): the store's write lock
    (SQLite's is global) is held for the inserts and the commit only -- shared with the
    submissions that arrive meanwhile (``store/sqlite.py``) -- not for the Python that builds them.
    """

    def __init__(self, service: Service, client: Client, body: dict[str, Any], idempotency_key: str | None,
                 digest: str, calendar: WorkingCalendar | None = None, documents: dict[str, Any] | None = None):
        calendar, documents = calendar or WorkingCalendar(), documents or {}
        moment = records.now()
        app = SimpleNamespace(
            id="app_" + uuid7_hex(), client_id=client.id, service=service.id,
            service_version=str(service.version), status=ApplicationStatus.IN_PROGRESS.value,
            reference=mask_free_text(body.get("reference"), pii_values(body["data"], service.input_schema)),
            data=body["data"], idempotency_key=idempotency_key,
            request_hash=digest, cancel_requested=False, created_at=moment, updated_at=moment,
            due_at=_due_at(service, moment, calendar))
        requests = [SimpleNamespace(id="req_" + uuid7_hex(), application_id=app.id, step=name, agency=step.agency,
                                    operation=step.operation, status=RequestStatus.PENDING.value,
                                    agency_reference=None, reason=None, attempts=0, output=None, updated_at=moment)
                    for name, step in service.steps.items()]
        chain, events = EventChain(), []  # a new application's chain starts at GENESIS

        def add(**fields: Any) -> None:
            events.append(chain.append(event_row(event_id=uuid7_hex(), application_id=app.id, **fields)))

        add(type="submitted", status=app.status, cause=f"client {client.name}",
            detail={"service": service.id, "version": str(service.version), "reference": app.reference,
                    **documents})  # each document's SHA-256 enters the chain (DESIGN §2)
        messages = []
        while changes := next_changes(service, app, requests):
            for request, new, reason, payload in changes:
                request.status, request.reason = new.value, reason
                add(request_id=request.id, step=request.step, type="status", status=new.value,
                    cause="submitted", detail=event_detail(service, request.step, reason, payload))
                if new is RequestStatus.QUEUED:
                    messages.append(dict(dispatch_message(app=app, request=request, payload=payload),
                                         created_at=records.now()))
        # The combined status may already be final (every step failed its mapping or was skipped).
        combined = combined_status((RequestStatus(r.status) for r in requests), cancelled=False)
        self.settled = combined.value != app.status
        if self.settled:
            app.status = combined.value
            add(type="application", status=app.status, cause="submitted")
        self.app, self.requests, self.events, self.messages = app, requests, events, messages
        self.niks = [{"application_id": app.id, "nik_hash": h} for h in nik_hashes(app.data)]
        self.attachments = body.get("documents")
        self.document = records.application_document(app, requests, order=service.order)

    def writes(self) -> sqlite.Writes:
        """Every row, parents before children."""
        return sqlite.Writes([(t.applications, [vars(self.app)]),
                              (t.requests, [{c: getattr(r, c) for c in _REQUEST_COLUMNS} for r in self.requests]),
                              (t.events, self.events),
                              (t.outbox, self.messages),
                              (t.application_niks, self.niks)],  # the operators' NIK search
                             then=self._then)

    def _then(self, conn: Connection) -> None:
        """In the same transaction: wake the relay at commit (PostgreSQL), and notify the client
        of an application settled at submission."""
        if self.attachments:
            attach(conn, self.app.id, self.attachments)
        if self.messages:
            records.notify_outbox(conn)
        if self.settled:
            notifier.enqueue(conn, self.app, self.app.status, cause="submitted")


def _by_idempotency_key(engine: Engine, client: Client, key: str, digest: str,
                        catalog: Catalog) -> dict[str, Any] | None:
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
