"""The worker: agency queue → adapter → status event, then ack.  Holds no database.

One pika ``SelectConnection``, run by the thread that calls ``run()`` (``_Session``).
Agency calls run in a thread pool so one process keeps many slow calls in flight; their
results come back to the connection's ioloop with ``add_callback_threadsafe``, which
publishes the outcome without waiting and acks the delivery once the broker confirmed
everything published for it (``_Delivery``).  A crash anywhere before the ack
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

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from adapters.base import Adapter, Outcome, OutcomeKind
from adapters.registry import adapter_class
from core import metrics
from core.domain.errors import (
    AgencyError,
    UnsupportedOperation,
)
from core.logs import correlation
from core.masking import mask_free_text, personal_values
from core.model import Agency, Catalog

from . import messages
from .acks import AckLedger, SentAnnouncements
from .breaker import breaker_for
from .callpool import CallPool
from .connection import AsyncSession, run_sessions
from .limits import AgencyLimits, prefetch
from .publisher import ConfirmWindow
from .retry import RetryPlan, poll_delays
from .topology import Names, declare_for

log = logging.getLogger("satupintu.worker")


class _CallState:
    """One delivery's call, shared by the pool thread that makes it and the connection thread.

    It carries what the call and its outcome need, and its bound methods are the callbacks
    (``run`` on a pool thread, ``finish`` handed back to the ioloop, ``announce`` for the
    ``sent`` event): one object per delivery instead of a closure per step, each of which
    made a cell for every variable it used."""

    __slots__ = ("started", "redelivered", "seconds", "finished", "worker", "delivery", "agency", "adapter",
                 "kind", "body", "headers", "request", "maybe_sent", "outcome")

    def __init__(self, started: float, redelivered: bool, *, worker: Worker | None = None,
                 delivery: _Delivery | None = None, agency: Agency | None = None, adapter: Adapter | None = None,
                 kind: str = "send", body: dict[str, Any] | None = None, headers: dict[str, Any] | None = None,
                 request: Any = None, maybe_sent: bool = False):
        self.started = started  # time.time(): the delivery's arrival, then the call's start (once it has a slot)
        self.redelivered = redelivered
        self.seconds: float | None = None
        self.finished = False
        self.worker, self.delivery, self.agency, self.adapter = worker, delivery, agency, adapter
        self.kind, self.body, self.headers, self.request = kind, body, headers, request
        self.maybe_sent = maybe_sent
        self.outcome: Outcome | str | None = None

    def run(self) -> None:
        """The call (a pool thread); its outcome goes back to the session's ioloop."""
        worker = self.worker
        assert worker is not None and self.delivery is not None
        self.outcome = worker._guarded_call(self.adapter, self.agency, self.kind, self.request, self,
                                            maybe_sent=self.maybe_sent)
        if not self.delivery.session.hand_back(self.finish):
            # That connection is gone: the broker redelivers the message.
            log.warning("outcome of %s dropped, the connection closed", self.request.request_id)

    def finish(self) -> None:
        """Publish what the call led to (the ioloop)."""
        assert self.worker is not None and self.delivery is not None and self.outcome is not None
        self.worker._finish(self.delivery, self.agency, self.kind, self.body, self.headers, self.request.attempt,
                            self.outcome, self)

    def announce(self) -> None:
        """The ``sent`` event, for a call still running after a while (the ioloop)."""
        assert self.worker is not None and self.delivery is not None
        self.worker._announce(self.delivery.session, self.body, self.request.attempt, self)

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
        self._pool: CallPool | None = None
        # Request ids being called in this process: a second copy of one request waits for
        # the first, then looks it up instead of filing it again (``_claim``/``_release``).
        self._busy: dict[str, object] = {}
        self._busy_done = threading.Condition(threading.Lock())
        self._busy_waiting = 0  # threads waiting in ``_claim`` (changed under ``_busy_done``)
        self.connections = 0

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        for agency in self.agencies.values():
            self.adapters[agency.id] = adapter_class(agency.adapter, file=agency.file)(agency)
            self.limits[agency.id] = AgencyLimits(agency)
            self.breakers[agency.id] = breaker_for(agency, snapshot=True)
        # A thread per delivery the agencies' prefetches let this process hold: those beyond
        # an agency's concurrency wait on its slots (``AgencyLimits.slot``), ready to start.
        size = sum(prefetch(a.concurrency) for a in self.agencies.values())
        self._pool = CallPool(size, name="agency-call")

    def run(self) -> None:
        """Consume until ``stop()``; reconnects after broker restarts."""
        if self._pool is None:
            self.start()
        run_sessions(self.urls, role="worker", stopping=self.stopping,
                     declare=lambda channel: declare_for(channel, self.names, self.agencies.values()),
                     session=lambda url: _Session(self, url))
        self._drain_pool()

    def stop(self) -> None:
        self.stopping.set()

    def _drain_pool(self) -> None:
        if self._pool:
            dropped = self._pool.shutdown(wait=True)
            if dropped:
                log.info("%d call(s) not started at shutdown; the broker hands their messages out again", dropped)
        for adapter in self.adapters.values():
            try:
                adapter.close()
            except Exception:
                log.exception("adapter close failed")

    # --- consuming (the session's ioloop thread) ----------------------------------------

    def _on_message(self, session: _Session, acks: AckLedger, method, props, raw: bytes) -> None:
        acks.received(method.delivery_tag)
        try:
            body = json.loads(raw)
            agency = self.agencies[body["agency"]]
            request = messages.agency_request(body, props.headers or {})
        except (ValueError, KeyError, TypeError) as exc:
            # Not a message we can ever process: straight to the dead letters.
            log.error("unreadable message on %s: %r", method.routing_key, exc)
            acks.refuse(method.delivery_tag, requeue=False)
            return
        delivery = _Delivery(session, acks, method.delivery_tag, body.get("request_id"))
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
            self._defer(delivery, agency, body, headers, wait, reason, maybe_sent=maybe_sent)
            delivery.seal()
            return
        call_state = _CallState(time.time(), bool(method.redelivered), worker=self, delivery=delivery, agency=agency,
                                adapter=self.adapters[agency.id], kind=kind, body=body, headers=headers,
                                request=request, maybe_sent=maybe_sent)
        if kind == "send":
            if self.announce_after <= 0:
                self._announce(session, body, request.attempt, call_state)
            else:
                session.announcements.add(call_state, call_state.announce)
        session.in_flight += 1
        assert self._pool is not None
        self._pool.submit(call_state.run)

    def _announce(self, session: _Session, body: dict[str, Any], attempt: int, call_state: _CallState) -> None:
        """The ``sent`` event: a worker holds the request and calls the agency (ioloop thread)."""
        if call_state.finished or session.closing:
            return
        event = messages.status_event(body, type="attempt", status="sent", attempt=attempt,
                                      detail={"redelivered": call_state.redelivered,
                                              "started_at": messages.iso_time(call_state.started)})
        # Informational: nothing waits for its confirm (the outcome follows on the same channel).
        session.publish(self.names.status, messages.status_key(event), event, None, token=None)

    def _guarded_call(self, adapter: Adapter, agency: Agency, kind: str, request, call_state: _CallState, *,
                      maybe_sent: bool) -> Outcome | str:
        """The call, one at a time per request id, within the agency's limits; feeds the breaker.

        ``call_state`` gets the call's start and duration, measured inside the agency's slot:
        the agency's own latency, not the time this delivery waited for a slot."""
        if not self._claim(request.request_id, call_state):
            maybe_sent = True  # another copy of this request was being called: look it up
        breaker = self.breakers[agency.id]
        limits = self.limits[agency.id]
        try:
            limits.take_slot()
            try:
                call_state.started = time.time()
                started = time.monotonic()
                outcome = self._call(adapter, agency, kind, request, maybe_sent=maybe_sent)
                call_state.seconds = seconds = time.monotonic() - started
            finally:
                limits.free_slot()
            metrics.observe_agency_call(agency.id, request.operation, kind, outcome, seconds,
                                        {"application_id": request.application_id, "step": request.step,
                                         "request_id": request.request_id,
                                         "traceparent": request.headers.get("traceparent")})
        finally:
            self._release(request.request_id)
        if isinstance(outcome, Outcome) and outcome.kind is OutcomeKind.TRANSIENT:
            breaker.record_failure()
        else:
            breaker.record_success()
        return outcome

    def _claim(self, request_id: str, owner: object) -> bool:
        """Take ``request_id`` for ``owner``, waiting while another call holds it; False if it waited.

        The free case takes no lock: ``dict.setdefault`` with a ``str`` key is atomic under the
        GIL.  A lock per call, taken by every call thread twice, queued them behind whichever
        held it when it lost the GIL.  Only copies of one request in flight together wait, on
        ``_busy_done``; ``_release`` notifies only when someone waits, and a waiter counts
        itself before it looks, so a release between its look and its wait cannot be missed."""
        busy = self._busy
        if busy.setdefault(request_id, owner) is owner:
            return True
        with self._busy_done:
            self._busy_waiting += 1
            try:
                while busy.setdefault(request_id, owner) is not owner:
                    self._busy_done.wait()
            finally:
                self._busy_waiting -= 1
        return False

    def _release(self, request_id: str) -> None:
        del self._busy[request_id]
        if self._busy_waiting:
            with self._busy_done:
                self._busy_done.notify_all()

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

    # --- outcomes (ioloop thread) ----------------------------------------------------

    def _finish(self, delivery: _Delivery, agency: Agency, kind: str, body: dict[str, Any], headers: dict[str, Any],
                attempt: int, outcome: Outcome | str, call_state: _CallState) -> None:
        session = delivery.session
        session.in_flight -= 1
        call_state.finished = True  # its ``sent`` announcement, if still pending, is skipped
        if session.closing:
            return  # not acked: the broker redelivers it; the agency sees the same request id again
        try:
            if outcome == "unsupported":
                event = messages.status_event(body, type=f"{kind}-unsupported", attempt=attempt,
                                              detail={"note": f"agency {agency.id} cannot {kind}; "
                                                              "the decision still arrives"})
                delivery.publish(self.names.status, messages.status_key(event), event)
            else:
                assert isinstance(outcome, Outcome)
                self._route(delivery, agency, kind, body, headers, attempt, outcome, call_state.detail())
        except Exception as exc:  # noqa: BLE001 - a channel that broke under us: redelivered
            log.warning("could not finish %s: %r", body.get("request_id"), exc, extra=correlation(body, headers))
            delivery.abandon()
            return
        delivery.seal()

    def _route(self, delivery: _Delivery, agency: Agency, kind: str, body: dict[str, Any],
               headers: dict[str, Any], attempt: int, outcome: Outcome, call: dict[str, Any]) -> None:
        """Publish what the call led to; ``call`` (when it started, how long it took) goes into
        the outcome and retry events, where operators read the agency's latency."""
        if outcome.reason or outcome.raw:  # the agency's free text: masked before the broker or a log keeps it
            personal = personal_values(body.get("payload"))
            outcome = dataclasses.replace(outcome, reason=mask_free_text(outcome.reason, personal),
                                          raw=mask_free_text(outcome.raw, personal))
        plan = self.plans[agency.id]
        if outcome.kind.is_failure:
            if kind == "cancel":
                event = messages.status_event(body, type="cancel-failed", attempt=attempt, reason=outcome.reason)
                delivery.publish(self.names.status, messages.status_key(event), event)
                return
            delay = plan.retry_delay(attempt) if outcome.kind is OutcomeKind.TRANSIENT else None
            if delay is not None:
                retry_headers = dict(headers, **{"x-attempt": attempt + 1, "x-last-error": outcome.reason or ""})
                delivery.publish(self.names.retry(delay), agency.id, body, retry_headers)
                metrics.RETRIES.labels(agency.id).inc()
                event = messages.status_event(body, type="retry", attempt=attempt, reason=outcome.reason,
                                              detail=dict(call, next_attempt=attempt + 1, delay_seconds=delay))
                delivery.publish(self.names.status, messages.status_key(event), event)
            else:
                self._dead(delivery, body, headers, attempt, outcome.reason or "failed", raw=outcome.raw)
            return
        if kind == "poll" and outcome.kind is OutcomeKind.ACCEPTED:
            self._schedule_poll(delivery, agency, body, headers, outcome)
            return
        status = messages.OUTCOME_STATUS[outcome.kind.value]
        event = messages.status_event(body, type="poll" if kind == "poll" else "outcome", status=status,
                                      attempt=attempt, reference=outcome.reference or body.get("reference"),
                                      reason=outcome.reason, output=outcome.output, detail=call)
        delivery.publish(self.names.status, messages.status_key(event), event)
        if kind == "send" and outcome.kind is OutcomeKind.ACCEPTED and agency.decisions == "poll":
            poll_body = dict(body, kind="poll", reference=outcome.reference, message_id=messages.new_id())
            self._schedule_poll(delivery, agency, poll_body, dict(headers, **{"x-poll-started": int(time.time()),
                                                                               "x-poll-round": 0}), None)

    def _schedule_poll(self, delivery: _Delivery, agency: Agency, body: dict[str, Any], headers: dict[str, Any],
                       outcome: Outcome | None) -> None:
        started = float(headers.get("x-poll-started", time.time()))
        rounds = int(headers.get("x-poll-round", 0))
        if time.time() - started >= agency.poll_deadline:
            self._dead(delivery, body, headers, int(headers.get("x-attempt", 1)),
                       f"no decision within {agency.poll_deadline:g} s")
            return
        delay = self.plans[agency.id].poll_delay(rounds)
        delivery.publish(self.names.retry(delay), agency.id, body,
                          dict(headers, **{"x-poll-round": rounds + 1, "x-poll-started": int(started)}))
        if outcome is not None:
            event = messages.status_event(body, type="poll", detail={"round": rounds + 1, "decision": "pending"})
            delivery.publish(self.names.status, messages.status_key(event), event)

    def _defer(self, delivery: _Delivery, agency: Agency, body: dict[str, Any], headers: dict[str, Any],
               wait: float, reason: str, *, maybe_sent: bool) -> None:
        """Park a message in a delay tier without spending an attempt (acked once that is confirmed)."""
        tiers = sorted(set(agency.retry_delays) | (set(poll_delays(agency)) if agency.decisions == "poll" else set()))
        delay = next((t for t in tiers if t >= wait), tiers[-1])
        deferred = int(headers.get("x-deferred", 0))
        parked = dict(headers, **{"x-deferred": deferred + 1})
        if maybe_sent:
            parked["x-maybe-sent"] = True
        delivery.publish(self.names.retry(delay), agency.id, body, parked)
        if not deferred:  # the history shows the first wait, not every round of it
            event = messages.status_event(body, type="deferred", attempt=int(headers.get("x-attempt", 1)),
                                          reason=reason, detail={"delay_seconds": delay})
            delivery.publish(self.names.status, messages.status_key(event), event)

    def _dead(self, delivery: _Delivery, body: dict[str, Any], headers: dict[str, Any], attempt: int,
              reason: str, *, raw: str | None = None) -> None:
        dead_headers = dict(headers, **{"x-attempt": attempt, "x-last-error": reason[:2000]})
        if raw:
            dead_headers["x-raw-answer"] = raw[:2000]
        delivery.publish(self.names.dead, body["agency"], body, dead_headers)
        metrics.DEAD_LETTERED.labels(body["agency"]).inc()
        log.warning("dead-lettered after %d attempt(s): %s", attempt, reason[:200], extra=correlation(body, headers))



class _Delivery:
    """One consumed message: acked once every message published for it is confirmed.

    The worker publishes what a call led to (an outcome, or a retry and its event, ...)
    with ``publish()``, then ``seal()``s the delivery; the confirms arrive later on the
    same ioloop.  All confirmed: acked (through its channel's ``AckLedger``, perhaps
    together with its neighbours).  Any refused (a nack, or returned for want of a
    queue): all of them are published again after a pause (``republish_delay``), the
    delivery still unacked, until the broker confirms them: see there.
    """

    __slots__ = ("session", "acks", "tag", "request_id", "published", "rounds", "outstanding", "failed", "sealed",
                 "settled")

    def __init__(self, session: _Session, acks: AckLedger, tag: int, request_id: str | None):
        self.session = session
        self.acks = acks
        self.tag = tag
        self.request_id = request_id
        self.published: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = []
        self.rounds = 0  # times its messages went unconfirmed and were published again
        self.outstanding = 0
        self.failed = False
        self.sealed = False
        self.settled = False

    def publish(self, exchange: str, routing_key: str, body: dict[str, Any],
                headers: dict[str, Any] | None = None) -> None:
        self.published.append((exchange, routing_key, body, headers))
        self.outstanding += 1
        self.session.publish(exchange, routing_key, body, headers, token=self)

    def seal(self) -> None:
        """Nothing more will be published for this delivery."""
        self.sealed = True
        self._maybe_settle()

    def abandon(self) -> None:
        """Leave it unacked: the broker redelivers it when the channel or connection goes."""
        self.settled = True

    def confirmed(self, ok: bool) -> None:
        self.outstanding -= 1
        if not ok:
            self.failed = True
        self._maybe_settle()

    def _maybe_settle(self) -> None:
        if self.settled or not self.sealed or self.outstanding > 0:
            return
        if self.failed:
            delay = republish_delay(self.rounds)
            self.rounds += 1
            log.error("the broker did not confirm what was published for %s; publishing it again in %g s",
                      self.request_id, delay)
            metrics.REPUBLISHED.inc()
            self.session.ioloop.call_later(delay, self._publish_again)
            return
        self.settled = True
        self.acks.ready(self.tag)

    def _publish_again(self) -> None:
        if self.settled or self.session.closing or not self.acks.channel.is_open:
            return  # the broker hands the message out again itself
        self.failed = False
        published, self.published = self.published, []
        try:
            for message in published:
                self.publish(*message)
        except Exception as exc:  # noqa: BLE001 - the channel went in between: redelivered
            log.warning("could not publish again for %s: %r", self.request_id, exc)
            self.abandon()


# An outcome the broker would not confirm means trouble at the broker (a queue without a
# leader while a node is lost, a full disk), not in the message, and the outcome is known:
# the worker publishes it again, the delivery still unacked, until the broker confirms it.
# Handing the message back instead (``basic_nack(requeue=True)``) called the agency again
# and spent one of the quorum queue's five returns each time: over a node's loss a message
# burned them within a second and was dead-lettered, its bundle failed
# (tests/scale/test_rabbitmq_cluster.py); pauses before the requeue only moved the limit.
# A message confirmed before the others of its round is published again with them: its
# copies are harmless (events carry ids the tracker keeps once; a retry is a request the
# agency files once under its id).  The held deliveries fill the prefetch, so the worker
# takes no new work while the broker is in trouble; a connection lost meanwhile returns them.
REPUBLISH_DELAY_FIRST = 0.5
REPUBLISH_DELAY_MAX = 30.0
# What is published again goes out on a fresh channel: after a node of a cluster was lost,
# a channel opened during the fail-over kept refusing (nacking) every publish to a queue
# for minutes, while a fresh one on the same connection was confirmed at once (measured
# with tests/scale/test_rabbitmq_cluster.py on RabbitMQ 3.10).  A refusal therefore
# replaces the publishing channel, at most once per this many seconds.
RENEW_AFTER = 1.0
RENEW_GIVE_UP = 10.0  # a fresh channel not in confirm mode by then is asked for again


def republish_delay(rounds: int) -> float:
    """Seconds to wait before publishing a delivery's messages again, after ``rounds`` earlier tries."""
    return min(REPUBLISH_DELAY_MAX, REPUBLISH_DELAY_FIRST * 2 ** min(rounds, 16))


class _Session(AsyncSession):
    """One broker connection's life: consume, call, publish asynchronously, ack on confirm.

    A pika ``SelectConnection`` on the worker's thread.  One channel publishes, in confirm
    mode, through a ``ConfirmWindow``: publishes do not wait for their confirm, so the
    ioloop keeps dispatching deliveries and heartbeats while earlier outcomes are
    confirmed; each delivery is acked when the last of its publishes is confirmed.  One
    channel per agency consumes, with a prefetch a little above that agency's concurrency
    (``limits.prefetch``).  Agency
    calls run in the worker's thread pool and hand their outcome back with
    ``hand_back()`` (batched onto ``add_callback_threadsafe``).
    """

    role = "worker"

    def __init__(self, worker: Worker, url: str):
        self.worker = worker
        self.in_flight = 0  # agency calls started from this connection's deliveries
        self.window: ConfirmWindow | None = None
        self.window_since = 0.0  # when the current publishing channel took over (monotonic)
        self.renewing = False  # a fresh publishing channel is being opened
        self.renew_started = 0.0
        self.retired: list[Any] = []  # publishing channels replaced, being closed
        self.consumers: list[tuple[Any, str]] = []
        self.stop_deadline: float | None = None
        self._over = False
        self._handed_back: list[Callable[[], None]] = []  # outcomes waiting for the ioloop
        self._lock = threading.Lock()  # held from a wake-up's request until the ioloop runs it
        super().__init__(url)
        self.announcements = SentAnnouncements(self.ioloop, worker.announce_after)
        self.ledgers: list[AckLedger] = []

    def _ended(self) -> None:
        self._over = True

    def hand_back(self, callback: Callable[[], None]) -> bool:
        """Run ``callback`` on the ioloop (from any thread); False when this session is over.

        Outcomes that finish while the ioloop has not yet run the earlier ones join them:
        the loop is woken (a socket write, and a loop turn) once per batch, not per call.
        No thread waits here: ``list.append`` is atomic, and ``_lock`` is a flag taken
        without blocking by the thread that asks for the wake-up and let go by the ioloop
        before it takes the batch, so an outcome appended after that either wakes the loop
        itself or is taken by the wake-up already asked for.  A callback that never runs
        (the loop ended first) leaves its delivery unacked, so the broker hands it out again."""
        if self._over:
            return False
        self._handed_back.append(callback)
        if not self._lock.acquire(blocking=False):
            return True  # a wake-up is already on its way
        try:
            self.ioloop.add_callback_threadsafe(self._run_handed_back)
        except Exception:  # noqa: BLE001 - the loop is closing
            del self._handed_back[:]
            self._lock.release()  # so that the next outcome tries to wake it again
            return False
        return True

    def _run_handed_back(self) -> None:
        self._lock.release()  # outcomes handed back from here on ask for a wake-up of their own
        pending = self._handed_back
        callbacks = pending[:]  # a copy and a slice deletion: each atomic, so appends meanwhile stay
        del pending[:len(callbacks)]
        if self.window is None:
            for callback in callbacks:
                callback()
            return
        with self.window.batch():  # the outcomes of the batch go out in one write
            for callback in callbacks:
                callback()

    def publish(self, exchange: str, routing_key: str, body: dict[str, Any], headers: dict[str, Any] | None,
                *, token: _Delivery | None) -> None:
        assert self.window is not None
        message_id = body.get("message_id") or body.get("event_id") or messages.new_id()
        self.window.publish(exchange, routing_key, body, headers, token, message_id=message_id)

    # --- connection lifecycle --------------------------------------------------------

    def _on_open(self, connection) -> None:
        connection.channel(on_open_callback=self._on_publish_channel)

    def _on_publish_channel(self, channel) -> None:
        channel.add_on_close_callback(self._on_publish_channel_closed)
        self.window = ConfirmWindow(channel, self._on_settled)
        self.window_since = time.monotonic()
        self.window.start(on_ready=self._open_consumers)

    # --- a publishing channel that refuses: replaced on the same connection -------------

    def _renew_publishing(self) -> None:
        """Open a fresh publishing channel; once it is in confirm mode it takes over
        (``_take_over``).  At most one at a time, and not within ``RENEW_AFTER`` seconds
        of the last: a refusal burst replaces the channel once."""
        now = time.monotonic()
        if self.closing or now - self.window_since < RENEW_AFTER:
            return
        if self.renewing and now - self.renew_started < RENEW_GIVE_UP:
            return  # one on its way (a broker that never answers it is asked again later)
        self.renewing, self.renew_started = True, now
        log.warning("the broker refused messages on the worker's publishing channel; opening a fresh one")
        try:
            self.connection.channel(on_open_callback=self._on_fresh_publish_channel)
        except Exception as exc:  # noqa: BLE001 - the connection is going: the session ends anyway
            self.renewing = False
            log.warning("could not open a fresh publishing channel: %r", exc)

    def _on_fresh_publish_channel(self, channel) -> None:
        channel.add_on_close_callback(self._on_publish_channel_closed)
        window = ConfirmWindow(channel, self._on_settled)
        window.start(on_ready=lambda: self._take_over(window))

    def _take_over(self, window: ConfirmWindow) -> None:
        """``window`` publishes from now on; what waits for a confirm on the old channel counts
        as refused (published again after its pause, on the new channel), then the old closes."""
        old, self.window = self.window, window
        self.window_since = time.monotonic()
        self.renewing = False
        metrics.CHANNEL_RENEWALS.inc()
        if old is None:
            return
        self.retired.append(old.channel)
        self._settle([], old.forget_pending())
        if old.channel.is_open:
            old.channel.close()

    def _on_publish_channel_closed(self, channel, reason: BaseException) -> None:
        if channel in self.retired:
            self.retired.remove(channel)  # closed by ``_take_over``: the session goes on
            return
        if self.renewing and self.window is not None and channel is not self.window.channel:
            self.renewing = False  # the fresh one failed before taking over: try again later
            return
        self._on_channel_closed(channel, reason)

    def _open_consumers(self) -> None:
        for agency in self.worker.agencies.values():
            self.connection.channel(on_open_callback=lambda ch, a=agency: self._on_consumer_channel(ch, a))
        self.ioloop.call_later(0.2, self._watch)

    def _on_consumer_channel(self, channel, agency: Agency) -> None:
        channel.add_on_close_callback(self._on_channel_closed)
        acks = AckLedger(channel)
        self.ledgers.append(acks)

        def consume(_frame) -> None:
            tag = channel.basic_consume(
                self.worker.names.agency_queue(agency.id),
                lambda _ch, method, props, body: self.worker._on_message(self, acks, method, props, body))
            self.consumers.append((channel, tag))
            if len(self.consumers) == len(self.worker.agencies):
                self.opened = True
                self.worker.connections += 1  # more than one means the broker was lost at least once
                log.info("worker consuming %s", ", ".join(self.worker.agencies))

        # The agency's slots bound its calls in flight; the prefetch holds a few deliveries
        # more, so that a freed slot starts the next call at once (``limits.prefetch``).
        channel.basic_qos(prefetch_count=prefetch(agency.concurrency), callback=consume)

    def _on_settled(self, acked: list[Any], failed: list[Any]) -> None:
        """A batch of confirms from a publishing channel; a refusal replaces the channel."""
        self._settle(acked, failed)
        if failed:
            self._renew_publishing()

    def _settle(self, acked: list[Any], failed: list[Any]) -> None:
        """Settle the deliveries of a batch of confirms, then ack the ready ones per channel
        (a contiguous run in one ``multiple`` ack; refusals went out as they came)."""
        for ledger in self.ledgers:
            ledger.batching = True
        try:
            for delivery in failed:
                if delivery is None:
                    log.warning("a sent-event was not confirmed (informational; the outcome follows)")
                else:
                    delivery.confirmed(False)
            for delivery in acked:
                if delivery is not None:
                    delivery.confirmed(True)
        finally:
            for ledger in self.ledgers:
                ledger.batching = False
                ledger.flush()

    def _watch(self) -> None:
        """Every 0.2 s: on ``stop()``, stop consuming, let the calls in flight finish and be
        acked (30 s at most), then close."""
        if self.closing:
            return
        if self.worker.stopping.is_set():
            if self.stop_deadline is None:
                self.stop_deadline = time.monotonic() + 30
                for channel, tag in self.consumers:
                    if channel.is_open:
                        channel.basic_cancel(tag)
            window_busy = self.window is not None and self.window.in_flight
            if (self.in_flight or window_busy) and time.monotonic() < self.stop_deadline:
                self.ioloop.call_later(0.05, self._watch)
                return
            self.closing = True
            if self.connection.is_open:
                self.connection.close()
            return
        self.ioloop.call_later(0.2, self._watch)
