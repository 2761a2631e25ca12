"""The worker: agency queue → adapter → status event, then ack.  Holds no database.

One pika connection, used only by the thread that runs ``run()``.  Agency calls run in a
thread pool so one process keeps many slow calls in flight; their results come back to
the connection thread with ``add_callback_threadsafe``, which publishes the outcome with
a publisher confirm and only then acks the delivery.  A crash anywhere before the ack
redelivers the message, and the agency sees the same request id again (idempotent); where
the agency is configured for it (``idempotency.lookup_before_resend``) the worker first
asks whether that request already went through, before every filing: after a broker
restart a resend cannot be told from a first send (docs/reliability.md).

The ``sent`` status event ("a worker is calling the agency") is published only for calls
still running after ``announce_after`` seconds (``SATUPINTU_SENT_EVENT_AFTER``, 1 s by
default; 0 publishes it before every call): most calls answer within milliseconds, and
the outcome event carries when the call started and how long it took, so a fast call
costs one message and one tracker transaction instead of two, while a request stuck at
an agency still shows ``sent`` in its history after a second (docs/decisions.md).

Before calling, the agency's circuit breaker (``broker.breaker``) and maintenance windows
(``broker.limits``) may *defer* the message: it is parked in a delay tier, without
spending an attempt, and comes back through dispatch.  Concurrency and rate limits are
held around each call by ``broker.limits.AgencyLimits``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pika.exceptions

from adapters.base import Adapter, Outcome, OutcomeKind
from adapters.registry import adapter_class
from gateway import metrics
from gateway.catalog import Agency, Catalog
from gateway.domain.errors import (
    AgencyError,
    BrokerUnavailable,
    PublishNotConfirmed,
    UnsupportedOperation,
)
from gateway.logs import correlation

from . import messages
from .breaker import breaker_for
from .connection import CONNECTION_ERRORS, connect_with_backoff
from .limits import AgencyLimits
from .publisher import Publisher
from .retry import RetryPlan, poll_delays
from .topology import Names, declare_for

log = logging.getLogger("satupintu.worker")


@dataclass(eq=False)
class _CallState:
    """One delivery's call, shared by the pool thread that makes it and the connection thread."""

    started: float  # time.time() when the call started (set again when a pool thread takes it)
    redelivered: bool
    seconds: float | None = None
    timer: Any = None  # the pending ``sent`` announcement (connection thread only)
    announced: bool = False
    finished: bool = False

    def detail(self) -> dict[str, Any]:
        out: dict[str, Any] = {"started_at": messages.iso_time(self.started)}
        if self.seconds is not None:
            out["duration_ms"] = round(self.seconds * 1000, 1)
        if self.redelivered:
            out["redelivered"] = True
        return out


class Worker:
    """Consumes the queues of ``agencies`` (all of the catalog's by default)."""

    def __init__(self, catalog: Catalog, *, amqp_urls: tuple[str, ...], namespace: str,
                 agencies: list[str] | None = None, announce_after: float = 1.0):
        self.catalog = catalog
        self.announce_after = announce_after
        self.urls = amqp_urls
        self.names = Names(namespace)
        self.agencies: dict[str, Agency] = {a: catalog.agencies[a] for a in (agencies or catalog.agencies)}
        self.adapters: dict[str, Adapter] = {}
        self.plans = {a.id: RetryPlan.for_agency(a) for a in self.agencies.values()}
        self.limits: dict[str, AgencyLimits] = {}
        self.breakers = {}
        self.stopping = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight = 0
        self._lock = threading.Lock()
        # Request ids being called in this process: a second copy of one request waits for
        # the first, then looks it up instead of filing it again.
        self._busy: Counter[str] = Counter()
        self._busy_done = threading.Condition(self._lock)
        self.connections = 0

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        for agency in self.agencies.values():
            self.adapters[agency.id] = adapter_class(agency.adapter, file=agency.file)(agency)
            self.limits[agency.id] = AgencyLimits(agency)
            self.breakers[agency.id] = breaker_for(agency, snapshot=True)
        size = sum(a.concurrency for a in self.agencies.values())
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="agency-call")

    def run(self) -> None:
        """Consume until ``stop()``; reconnects after broker restarts."""
        if self._pool is None:
            self.start()
        while not self.stopping.is_set():
            connection = connect_with_backoff(self.urls, name="satupintu-worker", stopping=self.stopping.is_set)
            if connection is None:
                break
            self.connections += 1  # more than one means the broker was lost at least once
            try:
                self._consume(connection)
            except CONNECTION_ERRORS + (BrokerUnavailable, PublishNotConfirmed) as exc:
                log.warning("worker lost the broker: %r; reconnecting", exc)
            finally:
                try:
                    if connection.is_open:
                        connection.close()
                except Exception:  # noqa: BLE001 - closing a broken connection may raise anything
                    pass
        self._drain_pool()

    def stop(self) -> None:
        self.stopping.set()

    def kill(self) -> None:
        self.stopping.set()
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _drain_pool(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for adapter in self.adapters.values():
            try:
                adapter.close()
            except Exception:
                log.exception("adapter close failed")

    # --- consuming -------------------------------------------------------------------

    def _consume(self, connection) -> None:
        publish_channel = connection.channel()
        declare_for(publish_channel, self.names, self.agencies.values())
        publisher = Publisher(publish_channel)
        consumers = []
        for agency in self.agencies.values():
            channel = connection.channel()
            # Prefetch bounds the calls in flight to this agency: the concurrency limit.
            channel.basic_qos(prefetch_count=agency.concurrency)
            tag = channel.basic_consume(
                self.names.agency_queue(agency.id),
                lambda ch, method, props, body: self._on_message(connection, publisher, ch, method, props, body))
            consumers.append((channel, tag))
        log.info("worker consuming %s", ", ".join(self.agencies))
        while not self.stopping.is_set():
            if not connection.is_open:
                # Lost inside a callback that had to swallow the error (an ack that could not
                # be sent); pika would raise ValueError on the next call.  Reconnect instead.
                raise pika.exceptions.StreamLostError("the connection closed under the worker")
            connection.process_data_events(time_limit=0.5)
        # Graceful stop: no new deliveries; let the calls in flight finish and be acked.
        for channel, tag in consumers:
            channel.basic_cancel(tag)
        deadline = time.monotonic() + 30
        while self._in_flight and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.2)

    def _on_message(self, connection, publisher: Publisher, channel, method, props, raw: bytes) -> None:
        try:
            body = json.loads(raw)
            agency = self.agencies[body["agency"]]
            request = messages.agency_request(body, props.headers or {})
        except (ValueError, KeyError, TypeError) as exc:
            # Not a message we can ever process: straight to the dead letters.
            log.error("unreadable message on %s: %r", method.routing_key, exc)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        # Broker-set headers (delivery count, x-death) belong to this delivery, not to the
        # messages we publish from it.
        headers = {k: v for k, v in (props.headers or {}).items()
                   if k != "x-delivery-count" and not k.startswith(("x-death", "x-first-death", "x-last-death"))}
        kind = body.get("kind", "send")
        # Sent before, perhaps: redelivered, published twice by a relay, replayed, or back from
        # a delay tier (``x-death``): dead-lettering is at-least-once, so a broker restart can
        # leave two copies of a parked message, neither flagged redelivered.
        maybe_sent = bool(method.redelivered or headers.get("x-maybe-sent") or headers.get("x-death"))
        breaker = self.breakers[agency.id]
        wait = self.limits[agency.id].maintenance_remaining()
        reason = f"maintenance window of {agency.id}" if wait else None
        if not wait and not breaker.allow():
            wait, reason = max(breaker.retry_in(), 0.001), f"circuit breaker of {agency.id} is open"
        if wait:
            self._defer(publisher, channel, method.delivery_tag, agency, body, headers, wait, reason,
                        maybe_sent=maybe_sent)
            return
        call_state = _CallState(started=time.time(), redelivered=bool(method.redelivered))
        if kind == "send":
            if self.announce_after <= 0:
                self._announce(publisher, body, request.attempt, call_state)
            else:
                call_state.timer = connection.call_later(
                    self.announce_after, lambda: self._announce(publisher, body, request.attempt, call_state))
        with self._lock:
            self._in_flight += 1
        adapter = self.adapters[agency.id]

        def call() -> None:
            call_state.started = time.time()
            outcome = self._guarded_call(adapter, agency, kind, request, maybe_sent=maybe_sent)
            call_state.seconds = time.time() - call_state.started
            try:
                connection.add_callback_threadsafe(
                    lambda: self._finish(publisher, channel, method.delivery_tag, agency, kind, body, headers,
                                         request.attempt, outcome, call_state, connection))
            except Exception as exc:  # noqa: BLE001 - the connection is gone: the broker redelivers
                log.warning("outcome of %s dropped, the connection closed: %r", request.request_id, exc)
                with self._lock:
                    self._in_flight -= 1

        assert self._pool is not None
        self._pool.submit(call)

    def _announce(self, publisher: Publisher, body: dict[str, Any], attempt: int, call_state: _CallState) -> None:
        """The ``sent`` event: a worker holds the request and calls the agency (connection thread)."""
        call_state.timer = None
        if call_state.finished:
            return
        call_state.announced = True
        event = messages.status_event(body, type="attempt", status="sent", attempt=attempt,
                                      detail={"redelivered": call_state.redelivered,
                                              "started_at": messages.iso_time(call_state.started)})
        try:
            publisher.publish(self.names.status, messages.status_key(event), event)
        except PublishNotConfirmed:
            self.breakers[body["agency"]].release()
            raise

    def _guarded_call(self, adapter: Adapter, agency: Agency, kind: str, request, *,
                      maybe_sent: bool) -> Outcome | str:
        """The call, one at a time per request id, within the agency's limits; feeds the breaker."""
        with self._lock:
            while self._busy[request.request_id]:
                # Another copy of this request is being called right now: wait, then look up.
                maybe_sent = True
                self._busy_done.wait()
            self._busy[request.request_id] += 1
        breaker = self.breakers[agency.id]
        try:
            with self.limits[agency.id].slot():
                started = time.monotonic()
                outcome = self._call(adapter, agency, kind, request, maybe_sent=maybe_sent)
                metrics.observe_agency_call(agency.id, request.operation, kind, outcome, time.monotonic() - started,
                                            {"application_id": request.application_id, "step": request.step,
                                             "request_id": request.request_id,
                                             "traceparent": request.headers.get("traceparent")})
        finally:
            with self._lock:
                self._busy[request.request_id] -= 1
                if not self._busy[request.request_id]:
                    del self._busy[request.request_id]
                self._busy_done.notify_all()
        if isinstance(outcome, Outcome) and outcome.kind is OutcomeKind.TRANSIENT:
            breaker.record_failure()
        else:
            breaker.record_success()
        return outcome

    def _call(self, adapter: Adapter, agency: Agency, kind: str, request, *, maybe_sent: bool) -> Outcome | str:
        """Run the adapter; never raises.  Returns an Outcome, or "unsupported"."""
        pace = self.limits[agency.id].pace
        try:
            pace()
            if kind == "poll":
                return adapter.poll(request)
            if kind == "cancel":
                return adapter.cancel(request)
            if agency.lookup_before_resend:
                # Ask "did it go through?" before *every* filing, not only when the message
                # says it may have been sent: after a broker restart RabbitMQ hands back
                # messages given to consumers before it, unflagged and sometimes minutes
                # later (docs/reliability.md), so a first send and a resend look the same.
                found = adapter.lookup(request)
                if found is not None:
                    return found
                pace()
            return adapter.send(request)
        except UnsupportedOperation:
            return "unsupported"
        except AgencyError as exc:
            return Outcome.from_error(exc)
        except Exception as exc:
            log.exception("adapter %s raised", agency.adapter,
                          extra={"application_id": request.application_id, "request_id": request.request_id,
                                 "agency": agency.id, "traceparent": request.headers.get("traceparent")})
            return Outcome(kind=OutcomeKind.TRANSIENT, reason=f"adapter error: {type(exc).__name__}: {exc}")

    # --- outcomes (connection thread) -------------------------------------------------

    def _finish(self, publisher: Publisher, channel, delivery_tag: int, agency: Agency, kind: str,
                body: dict[str, Any], headers: dict[str, Any], attempt: int, outcome: Outcome | str,
                call_state: _CallState, connection) -> None:
        call_state.finished = True
        if call_state.timer is not None:
            connection.remove_timeout(call_state.timer)
            call_state.timer = None
        try:
            if outcome == "unsupported":
                event = messages.status_event(body, type=f"{kind}-unsupported", attempt=attempt,
                                              detail={"note": f"agency {agency.id} cannot {kind}; "
                                                              "the decision still arrives"})
                publisher.publish(self.names.status, messages.status_key(event), event)
            else:
                assert isinstance(outcome, Outcome)
                self._route(publisher, agency, kind, body, headers, attempt, outcome, call_state.detail())
            channel.basic_ack(delivery_tag)
        except CONNECTION_ERRORS as exc:
            # Not acked: the broker redelivers it; the agency sees the same request id again.
            log.warning("could not finish %s: %r", body.get("request_id"), exc, extra=correlation(body, headers))
        except PublishNotConfirmed as exc:
            log.error("outcome of %s not confirmed: %s; requeueing", body.get("request_id"), exc,
                      extra=correlation(body, headers))
            try:
                channel.basic_nack(delivery_tag, requeue=True)
            except CONNECTION_ERRORS:
                pass
        finally:
            with self._lock:
                self._in_flight -= 1

    def _route(self, publisher: Publisher, agency: Agency, kind: str, body: dict[str, Any],
               headers: dict[str, Any], attempt: int, outcome: Outcome, call: dict[str, Any]) -> None:
        """Publish what the call led to; ``call`` (when it started, how long it took) goes into
        the outcome and retry events, where operators read the agency's latency."""
        plan = self.plans[agency.id]
        if outcome.kind.is_failure:
            if kind == "cancel":
                event = messages.status_event(body, type="cancel-failed", attempt=attempt, reason=outcome.reason)
                publisher.publish(self.names.status, messages.status_key(event), event)
                return
            delay = plan.retry_delay(attempt) if outcome.kind is OutcomeKind.TRANSIENT else None
            if delay is not None:
                retry_headers = dict(headers, **{"x-attempt": attempt + 1, "x-last-error": outcome.reason or ""})
                publisher.publish(self.names.retry(delay), agency.id, body, retry_headers)
                metrics.RETRIES.labels(agency.id).inc()
                event = messages.status_event(body, type="retry", attempt=attempt, reason=outcome.reason,
                                              detail=dict(call, next_attempt=attempt + 1, delay_seconds=delay))
                publisher.publish(self.names.status, messages.status_key(event), event)
            else:
                self._dead(publisher, body, headers, attempt, outcome.reason or "failed", raw=outcome.raw)
            return
        if kind == "poll" and outcome.kind is OutcomeKind.ACCEPTED:
            self._schedule_poll(publisher, agency, body, headers, outcome)
            return
        status = messages.OUTCOME_STATUS[outcome.kind.value]
        event = messages.status_event(body, type="poll" if kind == "poll" else "outcome", status=status,
                                      attempt=attempt, reference=outcome.reference or body.get("reference"),
                                      reason=outcome.reason, output=outcome.output, detail=call)
        publisher.publish(self.names.status, messages.status_key(event), event)
        if kind == "send" and outcome.kind is OutcomeKind.ACCEPTED and agency.decisions == "poll":
            poll_body = dict(body, kind="poll", reference=outcome.reference, message_id=uuid.uuid4().hex)
            self._schedule_poll(publisher, agency, poll_body, dict(headers, **{"x-poll-started": int(time.time()),
                                                                               "x-poll-round": 0}), None)

    def _schedule_poll(self, publisher: Publisher, agency: Agency, body: dict[str, Any], headers: dict[str, Any],
                       outcome: Outcome | None) -> None:
        started = float(headers.get("x-poll-started", time.time()))
        rounds = int(headers.get("x-poll-round", 0))
        if time.time() - started >= agency.poll_deadline:
            self._dead(publisher, body, headers, int(headers.get("x-attempt", 1)),
                       f"no decision within {agency.poll_deadline:g} s")
            return
        delay = self.plans[agency.id].poll_delay(rounds)
        publisher.publish(self.names.retry(delay), agency.id, body,
                          dict(headers, **{"x-poll-round": rounds + 1, "x-poll-started": int(started)}))
        if outcome is not None:
            event = messages.status_event(body, type="poll", detail={"round": rounds + 1, "decision": "pending"})
            publisher.publish(self.names.status, messages.status_key(event), event)

    def _defer(self, publisher: Publisher, channel, delivery_tag: int, agency: Agency, body: dict[str, Any],
               headers: dict[str, Any], wait: float, reason: str, *, maybe_sent: bool) -> None:
        """Park a message in a delay tier without spending an attempt; ack once that is confirmed."""
        tiers = sorted(set(agency.retry_delays) | (set(poll_delays(agency)) if agency.decisions == "poll" else set()))
        delay = next((t for t in tiers if t >= wait), tiers[-1])
        deferred = int(headers.get("x-deferred", 0))
        parked = dict(headers, **{"x-deferred": deferred + 1})
        if maybe_sent:
            parked["x-maybe-sent"] = True
        try:
            publisher.publish(self.names.retry(delay), agency.id, body, parked)
            if not deferred:  # the history shows the first wait, not every round of it
                event = messages.status_event(body, type="deferred", attempt=int(headers.get("x-attempt", 1)),
                                              reason=reason, detail={"delay_seconds": delay})
                publisher.publish(self.names.status, messages.status_key(event), event)
            channel.basic_ack(delivery_tag)
        except PublishNotConfirmed as exc:
            log.error("could not defer %s: %s; requeueing", body.get("request_id"), exc)
            channel.basic_nack(delivery_tag, requeue=True)

    def _dead(self, publisher: Publisher, body: dict[str, Any], headers: dict[str, Any], attempt: int,
              reason: str, *, raw: str | None = None) -> None:
        dead_headers = dict(headers, **{"x-attempt": attempt, "x-last-error": reason[:2000]})
        if raw:
            dead_headers["x-raw-answer"] = raw[:2000]
        publisher.publish(self.names.dead, body["agency"], body, dead_headers)
        metrics.DEAD_LETTERED.labels(body["agency"]).inc()
        log.warning("dead-lettered after %d attempt(s): %s", attempt, reason[:200], extra=correlation(body, headers))

