"""Submitting, reading and cancelling applications: the gateway's side of the workflow."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import jsonschema
from sqlalchemy import Connection, Engine, update
from sqlalchemy.exc import IntegrityError

from core.domain.errors import Conflict, NotFound, ValidationFailed
from core.domain.ids import uuid7_hexes
from core.domain.status import ApplicationStatus, RequestStatus, combined_status
from core.masking import mask_free_text, nik_hashes, pii_values
from core.model import Catalog, Service

from . import notifier
from .clients import Client
from .quick_schema import quick_check
from .store import records
from .store import tables as t
from .store.bulk import BulkInsert
from .store.group_commit import Writes, group_commit
from .workflow import dispatch, dispatch_message, next_changes

# Compiled once per schema: building a validator costs more than validating a bundle.
# Keyed by identity, and the schema is kept with its validator so that an id reused by
# another dict (a catalog loaded again) can never pick up a stale validator.  The third
# item is the schema's quick check (``quick_schema.quick_check``), or None when it has none.
_validators: dict[int, tuple[dict[str, Any], jsonschema.protocols.Validator, Callable[[Any], bool] | None]] = {}


def _compiled(schema: dict[str, Any]) -> tuple[dict[str, Any], jsonschema.protocols.Validator,
                                               Callable[[Any], bool] | None]:
    entry = _validators.get(id(schema))
    if entry is None or entry[0] is not schema:
        format_checker = jsonschema.FormatChecker()
        entry = (schema, jsonschema.Draft202012Validator(schema, format_checker=format_checker),
                 quick_check(schema, format_checker))
        _validators[id(schema)] = entry
    return entry


def schema_errors(schema: dict[str, Any], document: Any, *, prefix: str = "") -> list[dict[str, str]]:
    """``[{path, message}]`` for every way ``document`` breaks ``schema``; paths are JSON Pointers."""
    _schema, validator, quick = _compiled(schema)
    if quick is not None and quick(document):
        return []  # plainly valid: jsonschema would find nothing (tests/unit/test_submit_quick_schema.py)
    return validator_errors(validator, document, prefix=prefix)


def validator_errors(validator: jsonschema.protocols.Validator, document: Any, *,
                     prefix: str = "") -> list[dict[str, str]]:
    """jsonschema's own errors of ``document``, as ``schema_errors`` reports them."""
    errors = []
    for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path)):
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
    new = _NewApplication(service, client, body, idempotency_key, body_hash(body))
    try:
        group_commit(engine).write(new.writes(engine.dialect))
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


_APPLICATION_COLUMNS = ("id", "client_id", "service", "service_version", "status", "reference", "data",
                        "idempotency_key", "request_hash", "cancel_requested", "created_at", "updated_at", "due_at")
_REQUEST_COLUMNS = ("id", "application_id", "step", "agency", "operation", "status", "agency_reference", "reason",
                    "attempts", "updated_at")  # ``output`` left out: a JSON column would store None as JSON null
_EVENT_COLUMNS = ("event_id", "application_id", "request_id", "step", "type", "status", "detail", "cause",
                  "occurred_at", "recorded_at", "prev_hash", "hash")
_OUTBOX_COLUMNS = ("exchange", "routing_key", "body", "headers", "created_at")
_INSERT_APPLICATION = BulkInsert(t.applications, _APPLICATION_COLUMNS)
_INSERT_REQUESTS = BulkInsert(t.requests, _REQUEST_COLUMNS)
_INSERT_EVENTS = BulkInsert(t.events, _EVENT_COLUMNS)
_INSERT_OUTBOX = BulkInsert(t.outbox, _OUTBOX_COLUMNS)
_INSERT_NIKS = BulkInsert(t.application_niks, ("application_id", "nik_hash"))  # the operators' NIK search


class _NewApplication:
    """A new application's rows (application, requests, history, first dispatch messages,
    the keyed hashes of its NIKs) and its document, all worked out in memory before the
    write transaction starts.

    Everything about a new application is known up front, so the DAG is advanced in memory
    (``workflow.next_changes``, the same rules the tracker applies), the events are
    hash-chained exactly as ``records.add_event`` chains them, and ``writes()`` encodes the
    rows for the driver: the store's write lock (SQLite's is global) is held for the inserts
    and the commit -- shared with the submissions that arrive meanwhile
    (``store/group_commit.py``) -- not for the Python that builds them.
    """

    def __init__(self, service: Service, client: Client, body: dict[str, Any], idempotency_key: str | None,
                 digest: str):
        moment = records.now()
        ids = _RandomIds(4 + 3 * len(service.steps))  # 16 bytes each: enough for one round of ids
        app = SimpleNamespace(
            id="app_" + ids.uuid(), client_id=client.id, service=service.id,
            service_version=str(service.version), status=ApplicationStatus.IN_PROGRESS.value,
            reference=mask_free_text(body.get("reference"), pii_values(body["data"], service.input_schema)),
            data=body["data"], idempotency_key=idempotency_key,
            request_hash=digest, cancel_requested=False, created_at=moment, updated_at=moment,
            due_at=_due_at(service, moment))
        requests = [SimpleNamespace(id="req_" + ids.uuid(), application_id=app.id, step=name, agency=step.agency,
                                    operation=step.operation, status=RequestStatus.PENDING.value,
                                    agency_reference=None, reason=None, attempts=0, output=None, updated_at=moment)
                    for name, step in service.steps.items()]
        history = _History(app.id, ids)
        history.add(type="submitted", status=app.status, cause=f"client {client.name}",
                    detail={"service": service.id, "version": str(service.version),
                            "reference": app.reference})
        messages = []
        while changes := next_changes(service, app, requests):
            for request, new, reason, payload in changes:
                request.status, request.reason = new.value, reason
                history.add(request_id=request.id, step=request.step, type="status", status=new.value,
                            cause="submitted", detail={"reason": reason} if reason else {})
                if new is RequestStatus.QUEUED:
                    messages.append(dict(dispatch_message(app=app, request=request, payload=payload,
                                                          message_id="msg_" + ids.uuid(), span_id=ids.hex(8)),
                                         created_at=records.now()))
        # The combined status may already be final (every step failed its mapping or was skipped).
        combined = combined_status((RequestStatus(r.status) for r in requests), cancelled=False)
        self.settled = combined.value != app.status
        if self.settled:
            app.status = combined.value
            history.add(type="application", status=app.status, cause="submitted")
        self.app, self.requests, self.events, self.messages = app, requests, history.rows, messages
        self.niks = [{"application_id": app.id, "nik_hash": h} for h in nik_hashes(app.data)]
        self.document = records.application_document(app, requests, order=service.order)

    def writes(self, dialect: Any) -> Writes:
        """Every row, encoded for ``dialect``'s driver before the write transaction begins."""
        # Timestamps shared by rows (``moment`` in 5 columns, an event's time in 2) are written
        # out once by the SQLite shortcut itself (``bulk._sqlite_datetime``): no ``shared`` memo.
        rows = [(_INSERT_APPLICATION, _INSERT_APPLICATION.encode(dialect, [vars(self.app)])),
                (_INSERT_REQUESTS, _INSERT_REQUESTS.encode(dialect, [vars(r) for r in self.requests])),
                (_INSERT_EVENTS, _INSERT_EVENTS.encode(dialect, self.events))]
        if self.messages:
            rows.append((_INSERT_OUTBOX, _INSERT_OUTBOX.encode(dialect, self.messages)))
        if self.niks:  # after the application: group commit writes tables in the order first seen
            rows.append((_INSERT_NIKS, _INSERT_NIKS.encode(dialect, self.niks)))
        # The relay is woken at commit (PostgreSQL), as ``records.notify_outbox`` would.
        return Writes(rows, then=self._settled if self.settled else None,
                      notify=(records.OUTBOX_CHANNEL,) if self.messages else ())

    def _settled(self, conn: Connection) -> None:
        notifier.enqueue(conn, self.app, self.app.status, cause="submitted")


class _RandomIds:
    """The ids of one submission, cut from one ``os.urandom`` call.

    ``uuid4().hex`` per id is one ``getrandom`` system call each, and each call lets go of
    the GIL: with other threads of the process waiting for it, ~14 hand-overs per
    submission.  ``uuid()`` is a time-ordered id (``gateway/domain/ids.py``), all of one
    submission made in the same millisecond.
    """

    def __init__(self, count: int):
        self._pool = os.urandom(16 * count)
        self._at = 0
        self._ms = time.time_ns() // 1_000_000

    def _take(self, n: int) -> bytes:
        if self._at + n > len(self._pool):
            self._pool, self._at = os.urandom(max(n, len(self._pool))), 0
        self._at += n
        return self._pool[self._at - n:self._at]

    def uuid(self) -> str:
        return uuid7_hexes(self._take(16), self._ms)

    def hex(self, nbytes: int) -> str:
        return self._take(nbytes).hex()


class _History:
    """A new application's first events, hash-chained in memory (as ``records.add_event`` does)."""

    def __init__(self, application_id: str, ids: _RandomIds):
        self.application_id = application_id
        self.ids = ids
        self.prev = records.GENESIS
        self.rows: list[dict[str, Any]] = []

    def add(self, *, type: str, status: str | None = None, request_id: str | None = None,
            step: str | None = None, detail: dict[str, Any] | None = None, cause: str | None = None) -> None:
        occurred_at = records.now()
        row = {"event_id": self.ids.uuid(), "application_id": self.application_id, "request_id": request_id,
               "step": step, "type": type, "status": status, "detail": detail or {}, "cause": cause,
               "occurred_at": occurred_at, "recorded_at": occurred_at, "prev_hash": self.prev}
        row["hash"] = self.prev = records.event_hash(self.prev, row, occurred_at)  # reads the first 8 keys
        self.rows.append(row)


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
