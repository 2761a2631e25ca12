"""The tracker: the one writer of request state after submission.

Every change (worker outcome, agency callback, poll result, dead letter) arrives as an
event and is applied in one transaction that locks the application row, through the
domain's monotonic state machine: a duplicate or late event never moves a request
backwards.  Then the DAG releases the steps that can run now and the combined status is
settled.  Several trackers may run side by side.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import OperationalError

from broker.connection import CONNECTION_ERRORS, DEFAULT_HEARTBEAT, connect_with_backoff
from broker.topology import Names, declare_for
from core.domain.errors import BrokerUnavailable
from core.domain.status import (
    RequestStatus,
    can_transition,
    combined_status,
)
from core.logs import correlation
from core.masking import mask_free_text, pii_values
from core.model import Catalog, Service

from . import notifier
from .store import records
from .store import tables as t
from .tracker_batch import EventBatch
from .workflow import dispatch, release_ready_steps

log = logging.getLogger("satupintu.tracker")

# Event types that carry a new request status in ``status``.
_STATUS_EVENTS = {"attempt", "outcome", "poll", "callback", "failed"}


def settle(conn: Connection, service: Service, app: Any, requests: list[Any], *, cause: str) -> str:
    """Recompute the combined status and record it when it changed; returns it."""
    combined = combined_status((RequestStatus(r.status) for r in requests), cancelled=bool(app.cancel_requested))
    batch = EventBatch.of(conn)
    moment = records.now()
    if combined.value != app.status:
        cause = decided_by(combined.value, requests) or cause
        records.add_event(conn, application_id=app.id, type="application", status=combined.value, cause=cause)
        notifier.enqueue(conn, app, combined.value, cause=cause)
    if batch is not None and batch.apps.get(app.id) is app:  # the batch's own copy of the row
        app.status, app.updated_at = combined.value, moment
        batch.write_application(app)  # written once, when the batch ends
    elif combined.value != app.status:
        conn.execute(records.SET_APPLICATION_STATUS, {"app_id": app.id, "new_status": combined.value, "moment": moment})
    else:
        conn.execute(_TOUCH_APPLICATION, {"app_id": app.id, "moment": moment})
    return combined.value


def decided_by(combined: str, requests: list[Any]) -> str | None:
    """The cause of a ``failed`` or ``rejected`` bundle: the requests that made it so ("tax
    failed"), not the event that happened to settle the last open one ("permit approved")."""
    if combined not in ("failed", "rejected"):
        return None
    steps = [r.step for r in requests if r.status == combined]
    return f"{', '.join(steps)} {combined}" if steps else None


# Built once: constructing a statement per event costs more than executing it.  (A
# bindparam may not share a name with a column the statement sets.)
_TOUCH_APPLICATION = (update(t.applications).where(t.applications.c.id == bindparam("app_id"))
                      .values(updated_at=bindparam("moment")))


def apply_event(conn: Connection, catalog: Catalog, event: dict[str, Any]) -> bool:
    """Apply one status event; returns False when it changed nothing (duplicate, unknown, late).

    The event is recorded in the history first: the insert itself recognises an event id
    applied before (a redelivery), and then nothing else is written.  In a tracker batch
    (``EventBatch``) the rows come from the batch's copies and the writes wait for its end;
    the batch looked the event ids up when it locked its applications.
    """
    batch = EventBatch.of(conn)
    if batch is not None:
        app, rows = batch.rows(conn, event["application_id"])
    else:
        app = records.application_row(conn, event["application_id"], lock=True)
        # All of the application's requests in one read: the DAG needs them below anyway.
        rows = records.request_rows(conn, app.id) if app is not None else []
    if app is None:
        log.warning("event %s for unknown application %s", event.get("event_id"), event["application_id"],
                    extra=correlation(event))
        return False
    request = next((r for r in rows if r.id == event["request_id"]), None)
    if request is None:
        log.warning("event %s for unknown request %s", event["event_id"], event["request_id"],
                    extra=correlation(event))
        return False
    kind = event["type"]
    if event.get("reason"):  # the agency's free text: masked before the history and the request keep it
        event = dict(event, reason=mask_free_text(event["reason"], _personal_values(catalog, app)))
    current = RequestStatus(request.status)
    new = RequestStatus(event["status"]) if kind in _STATUS_EVENTS and event.get("status") else None
    changed = new is not None and can_transition(current, new)
    detail = dict(event.get("detail") or {})
    for key in ("attempt", "origin"):
        if event.get(key) is not None:
            detail[key] = event[key]
    if event.get("reason"):
        detail["reason"] = event["reason"]
    if event.get("reference"):
        detail["reference"] = event["reference"]
    if new is not None and not changed:
        detail["ignored"] = f"request is already {current.value}"
    values: dict[str, Any] = {}
    attempt = event.get("attempt")
    # The attempt count comes with whichever worker event arrives first for that attempt:
    # the ``sent`` announcement (slow calls only), the outcome, the retry or the dead letter.
    if kind in ("attempt", "outcome", "retry", "failed") and attempt and attempt > request.attempts:
        values["attempts"] = attempt
    if changed:
        values.update(status=new.value, updated_at=records.now())
        if event.get("reference"):
            values["agency_reference"] = event["reference"]
        if event.get("reason") is not None or new.terminal:
            values["reason"] = event.get("reason")
        if event.get("output"):
            values["output"] = event["output"]
    elif event.get("reference") and not request.agency_reference and kind in _STATUS_EVENTS:
        # Overtaken (several trackers apply events side by side, so a poll's or callback's
        # "approved" can land before the worker's "accepted"): the status stays, but the
        # agency's reference this event carries must not be lost.
        values["agency_reference"] = event["reference"]
    if not records.add_event(conn, event_id=event["event_id"], application_id=app.id, request_id=request.id,
                             step=request.step, type=kind, status=new.value if changed else None, detail=detail,
                             cause=event.get("cause") or f"{kind} from {event.get('origin') or 'agency'}",
                             occurred_at=_parse_time(event.get("occurred_at"))):
        return False  # a redelivered event: applied before
    if values:
        if batch is not None:
            batch.write_request(request, values)  # later events of this batch see the copy
        else:
            conn.execute(records.UPDATE_REQUEST, dict(values, request_row_id=request.id))
            # The rows as they now are in the store, without reading them again.
            request = SimpleNamespace(**({key: getattr(request, key) for key in t.requests.c.keys()} | values))
            rows = [request if r.id == request.id else r for r in rows]
    if not changed:
        if (current is RequestStatus.CANCELLED and new in (RequestStatus.ACCEPTED, RequestStatus.APPROVED)
                and event.get("reference") and event["type"] in ("outcome", "callback", "poll")):
            _compensate(conn, catalog, app, request, event["reference"])
        return False
    service = catalog.services[app.service]
    cause = f"{request.step} {new.value}"
    requests = release_ready_steps(conn, service, app, rows, cause=cause,
                                   write=batch.write_request if batch is not None else None)
    settle(conn, service, app, requests, cause=cause)
    return True


def _compensate(conn: Connection, catalog: Catalog, app: Any, request: Any, reference: str) -> None:
    """An agency took a request we had cancelled (its message was already on the way):
    ask the agency to withdraw it, where the agency supports cancelling."""
    agency = catalog.agencies.get(request.agency)
    operation = agency.operations.get(request.operation, {}) if agency else {}
    if not operation.get("cancel"):
        records.add_event(conn, application_id=app.id, request_id=request.id, step=request.step,
                          type="compensation", cause="cancelled before the agency answered",
                          detail={"note": f"agency {request.agency} cannot cancel; reference {reference} stands"})
        return
    dispatch(conn, app=app, request=request, kind="cancel", reference=reference)
    records.add_event(conn, application_id=app.id, request_id=request.id, step=request.step, type="compensation",
                      cause="cancelled before the agency answered",
                      detail={"note": f"asked {request.agency} to cancel {reference}"})


def record_dead_letter(conn: Connection, catalog: Catalog, body: dict[str, Any], headers: dict[str, Any],
                       message_id: str) -> None:
    """Keep a dead-lettered dispatch message for operators and fail its request."""
    if conn.execute(select(t.dead_letters.c.id).where(t.dead_letters.c.message_id == message_id)).first():
        return
    reason = headers.get("x-last-error")
    deaths = headers.get("x-death") or []
    if not reason and deaths:
        death = deaths[0]
        reason = (f"dead-lettered by RabbitMQ ({death.get('reason')}) from {death.get('queue')}: "
                  "the message crashed or was rejected by workers repeatedly")
    reason = reason or "dead-lettered"
    if isinstance(reason, bytes):
        reason = reason.decode(errors="replace")
    app = records.application_row(conn, body.get("application_id", ""))
    personal = _personal_values(catalog, app) if app is not None else set()
    reason = mask_free_text(reason, personal)
    attempts = int(headers.get("x-attempt", 1))
    conn.execute(insert(t.dead_letters).values(
        message_id=message_id, request_id=body.get("request_id", ""), application_id=body.get("application_id", ""),
        agency=body.get("agency", ""), reason=reason, attempts=attempts, body=body, created_at=records.now()))
    if body.get("kind", "send") == "cancel" or "request_id" not in body:
        return
    event = {
        "event_id": f"dead-{message_id}", "type": "failed", "status": RequestStatus.FAILED.value,
        "request_id": body["request_id"], "application_id": body["application_id"], "attempt": attempts,
        "reason": reason,
        "detail": {"dead_letter": True, "raw_answer": mask_free_text(headers.get("x-raw-answer"), personal)},
        "cause": "dead letter", "occurred_at": None,
    }
    apply_event(conn, catalog, event)


def _personal_values(catalog: Catalog, app: Any) -> set[str]:
    """The application's ``x-pii`` values, to find them in an agency's free text."""
    service = catalog.services.get(app.service)
    return pii_values(app.data, service.input_schema if service else None)


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class Tracker:
    """Consumes ``<ns>.tracker`` (status events) and ``<ns>.dead`` (dead letters).

    Events are applied in batches: the deliveries that arrived together (up to ``batch``)
    are applied in one store transaction, then acknowledged with one
    ``basic_ack(multiple=True)``.  The ack still follows the commit, so a crash replays the
    batch and the event-id check ignores what was applied.  Within a batch the events are
    ordered by application (stable, so one application's events keep their order), and the
    batch locks its application rows in one statement in id order: several trackers then
    lock them in the same order and cannot deadlock.
    """

    def __init__(self, engine: Engine, catalog: Catalog, *, amqp_urls: tuple[str, ...], namespace: str,
                 prefetch: int = 200, batch: int = 50, heartbeat: int = DEFAULT_HEARTBEAT):
        self.engine = engine
        self.heartbeat = heartbeat
        self.catalog = catalog
        self.urls = amqp_urls
        self.names = Names(namespace)
        self.prefetch = prefetch
        # At most this many events per transaction: the store's write lock is held for the
        # whole batch, and submissions queue behind it.
        self.batch_size = batch
        self.stopping = threading.Event()
        # (delivery tag, application id, event id or None, the work, log correlation)
        self._batch: list[tuple[int, str, str | None, Callable[[Connection], Any], dict[str, Any]]] = []
        # The store connection the batches run on, kept between them (``_store``).
        self._conn: Connection | None = None

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        try:
            self._consume()
        finally:
            self._drop_store(invalidate=False)

    def _store(self) -> Connection:
        """The store connection for the next batch, checked out once and kept: a checkout,
        its pre-ping (PostgreSQL) and the return to the pool per batch cost more than a
        small batch's statements.  Dropped (``_drop_store``) after a store error."""
        if self._conn is None or self._conn.closed:
            self._conn = self.engine.connect()
        return self._conn

    def _drop_store(self, *, invalidate: bool) -> None:
        """Give the kept connection back -- discarded, after a store error: it may be dead."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if invalidate:
                conn.invalidate()
            conn.close()
        except Exception:  # noqa: BLE001 -- it is being thrown away
            log.debug("closing the store connection failed", exc_info=True)

    def _consume(self) -> None:
        while not self.stopping.is_set():
            connection = connect_with_backoff(self.urls, name="satupintu-tracker", stopping=self.stopping.is_set,
                                              heartbeat=self.heartbeat)
            if connection is None:
                return
            try:
                channel = connection.channel()
                declare_for(channel, self.names, self.catalog.agencies.values())
                channel.basic_qos(prefetch_count=self.prefetch)
                channel.basic_consume(self.names.tracker, self._on_status)
                channel.basic_consume(self.names.dead, self._on_dead)
                while not self.stopping.is_set():
                    # Returns once a burst of deliveries was dispatched (or after 0.5 s idle).
                    connection.process_data_events(time_limit=0.5)
                    self._flush(channel)
            except CONNECTION_ERRORS + (BrokerUnavailable,) as exc:
                log.warning("tracker lost the broker: %r; reconnecting", exc)
            finally:
                self._batch.clear()  # unacked: the broker redelivers them
                try:
                    if connection.is_open:
                        connection.close()
                except Exception:  # noqa: BLE001
                    pass

    def _on_status(self, channel, method, props, raw: bytes) -> None:
        try:
            event = json.loads(raw)
            event["event_id"], event["application_id"], event["request_id"], event["type"]
        except (ValueError, KeyError, TypeError) as exc:
            log.error("unreadable status event dropped: %r (%r)", raw[:200], exc)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        self._batch.append((method.delivery_tag, str(event["application_id"]), str(event["event_id"]),
                            lambda conn: apply_event(conn, self.catalog, event), correlation(event, props.headers)))
        if len(self._batch) >= self.batch_size:
            self._flush(channel)

    def _on_dead(self, channel, method, props, raw: bytes) -> None:
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            body = {"unreadable": raw[:2000].decode(errors="replace")}
        message_id = props.message_id or body.get("message_id") or records.new_id("dead")
        headers = dict(props.headers or {})
        log.info("dead letter %s received", message_id, extra=correlation(body, headers))
        self._batch.append((method.delivery_tag, str(body.get("application_id", "")), None,
                            lambda conn: record_dead_letter(conn, self.catalog, body, headers, message_id),
                            correlation(body, headers)))
        if len(self._batch) >= self.batch_size:
            self._flush(channel)

    def _flush(self, channel) -> None:
        """Apply the batch in one transaction, then ack every delivery in it at once."""
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        ordered = sorted(batch, key=lambda item: item[1])
        last_tag = max(tag for tag, *_ in batch)
        for attempt in range(5):
            try:
                conn = self._store()
                with conn.begin():
                    applied = EventBatch.open(conn)
                    try:
                        applied.load(conn, (item[1] for item in ordered), (item[2] for item in ordered))
                        for _tag, _app, _event, work, _ids in ordered:
                            work(conn)
                        applied.finish(conn)
                    finally:
                        applied.forget()
                break
            except OperationalError as exc:  # store busy or briefly away (or a deadlock): try again
                self._drop_store(invalidate=True)  # the next attempt starts on a fresh connection
                log.warning("store error applying %d event(s) (attempt %d): %s", len(batch), attempt + 1, exc,
                            extra=batch[0][4])
                time.sleep(0.2 * (attempt + 1))
        else:
            channel.basic_nack(last_tag, multiple=True, requeue=True)
            return
        # Every delivery of this channel up to last_tag is in the batch or already rejected.
        channel.basic_ack(last_tag, multiple=True)
