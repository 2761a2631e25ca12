"""The worker: agency queue → adapter → status event, then ack.  Holds no database.

Read top to bottom, a delivery goes:

1. ``on_message`` (the session's ioloop): the message is read; the middleware's
   ``before_delivery`` hooks may defer it (circuit breaker open, maintenance window: parked
   in a delay tier without spending an attempt) and schedule its ``sent`` announcement;
   else the call goes to the thread pool.
2. ``_call`` (a pool thread): ``before_call`` hooks (request-id claim, the agency's call
   slot), the adapter (``calls.call_agency``), ``after_call`` hooks in reverse (metrics,
   slot, breaker, claim); the outcome is handed back to the ioloop.
3. ``_finish`` (the ioloop): ``outcomes.decide`` says what to publish; the delivery
   publishes it and is acked once the broker confirmed all of it (``delivery.Delivery``).

A crash anywhere before the ack redelivers the message, and the agency sees the same
request id again (idempotent); where the agency is configured for it
(``idempotency.lookup_before_resend``) the worker first asks whether that request already
went through, before every filing (docs/reliability.md).  The session is
``session.WorkerSession`` on a real broker, ``stub.StubSession`` in tests.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from adapters.base import Adapter, Outcome, OutcomeKind
from adapters.registry import adapter_class
from core import metrics
from core.logs import correlation
from core.model import Agency, Catalog
from core.settings import Settings

from . import messages, outcomes
from .breaker import CircuitBreaker, breaker_for
from .calls import Call, call_agency
from .connection import run_sessions
from .delivery import AckLedger, Delivery
from .limits import AgencyLimits, prefetch
from .middleware import (
    CallMetrics,
    CallSlots,
    CircuitBreakers,
    MaintenanceWindows,
    Middleware,
    RequestClaims,
    SentAnnouncement,
)
from .retry import RetryPlan
from .session import WorkerSession
from .topology import Names, declare_for

log = logging.getLogger("satupintu.worker")

# Headers the broker sets on a delivery (its count, dead-lettering history): they belong to
# this delivery, not to the messages published from it.
_BROKER_HEADERS = ("x-delivery-count", "x-death", "x-first-death", "x-last-death")


class Worker:
    """Consumes the queues of ``agencies`` (all of the catalog's by default).

    ``announce_after`` overrides ``settings.sent_event_after``; ``adapters`` replaces the
    registry's adapters (by agency id), for tests and embedding."""

    def __init__(self, catalog: Catalog, settings: Settings, *, agencies: list[str] | None = None,
                 announce_after: float | None = None, adapters: dict[str, Adapter] | None = None):
        self.catalog = catalog
        self.settings = settings
        self.names = Names(settings.namespace)
        self.agencies: dict[str, Agency] = {a: catalog.agencies[a] for a in (agencies or catalog.agencies)}
        self.adapters: dict[str, Adapter] = dict(adapters or {})
        self.plans = {a.id: RetryPlan.for_agency(a) for a in self.agencies.values()}
        self.limits: dict[str, AgencyLimits] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.announce_after = settings.sent_event_after if announce_after is None else announce_after
        self.middleware: list[Middleware] = []
        self.stopping = threading.Event()
        self.pool: ThreadPoolExecutor | None = None
        self.connections = 0  # sessions that came to consume: more than one means the broker was lost

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Build the adapters, limits, breakers and middleware; opens no connection."""
        for agency in self.agencies.values():
            if agency.id not in self.adapters:
                self.adapters[agency.id] = adapter_class(agency.adapter, file=agency.file)(agency, self.settings)
            self.limits[agency.id] = AgencyLimits(agency)
            self.breakers[agency.id] = breaker_for(agency, state_dir=self.settings.state_dir or None)
        # In the order of their ``before_*`` hooks: a deferral stops the ones after it, so the
        # breaker's probe is taken only for a message that is then called.
        self.middleware = [MaintenanceWindows(self.limits), CircuitBreakers(self.breakers),
                           SentAnnouncement(self.names, self.announce_after), RequestClaims(),
                           CallSlots(self.limits), CallMetrics()]
        # A thread per delivery the agencies' prefetches let this process hold: those beyond
        # an agency's concurrency wait for its call slots, ready to start.
        size = sum(prefetch(a.concurrency) for a in self.agencies.values())
        self.pool = ThreadPoolExecutor(size, thread_name_prefix="agency-call")

    def run(self) -> None:
        """Consume until ``stop()``; reconnects after broker restarts."""
        if self.pool is None:
            self.start()
        queues = {self.names.agency_queue(a.id): prefetch(a.concurrency) for a in self.agencies.values()}
        heartbeat = self.settings.amqp_heartbeat
        run_sessions(self.settings.amqp_urls, role="worker", stopping=self.stopping, heartbeat=heartbeat,
                     declare=lambda channel: declare_for(channel, self.names, self.agencies.values()),
                     session=lambda url: WorkerSession(url, queues=queues, on_message=self.on_message,
                                                       stopping=self.stopping, on_consuming=self._consuming,
                                                       heartbeat=heartbeat))
        self.close()

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        """Let the running calls finish, drop those not started (the broker hands their
        messages out again), close the adapters."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        for adapter in self.adapters.values():
            try:
                adapter.close()
            except Exception:
                log.exception("adapter close failed")

    def _consuming(self) -> None:
        self.connections += 1

    # --- 1. a delivery arrives (the session's ioloop) -------------------------------------

    def on_message(self, session: Any, acks: AckLedger, method: Any, props: Any, raw: bytes) -> None:
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
        headers = {k: v for k, v in (props.headers or {}).items() if not k.startswith(_BROKER_HEADERS)}
        delivery = Delivery(session, acks, method.delivery_tag, body.get("request_id"))
        # Sent before, perhaps: redelivered, published twice by a relay, replayed, or back from
        # a delay tier (``x-death``): dead-lettering is at-least-once, so a broker restart can
        # leave two copies of a parked message, neither flagged redelivered.
        maybe_sent = bool(method.redelivered or headers.get("x-maybe-sent") or (props.headers or {}).get("x-death"))
        call = Call(session=session, delivery=delivery, agency=agency, adapter=self.adapters[agency.id],
                    kind=body.get("kind", "send"), body=body, headers=headers, request=request,
                    maybe_sent=maybe_sent, redelivered=bool(method.redelivered), started=time.time())
        for middleware in self.middleware:
            deferral = middleware.before_delivery(call)
            if deferral is not None:
                self._publish(call, outcomes.defer(agency, self.names, body, headers, wait=deferral.wait,
                                                   reason=deferral.reason, maybe_sent=maybe_sent))
                return
        session.in_flight += 1
        assert self.pool is not None, "start() first"
        self.pool.submit(self._call, call)

    # --- 2. the call (a pool thread) -------------------------------------------------------

    def _call(self, call: Call) -> None:
        ran: list[Middleware] = []
        try:
            for middleware in self.middleware:
                middleware.before_call(call)
                ran.append(middleware)
            call.started = time.time()
            started = time.monotonic()
            call.outcome = call_agency(call, self.limits[call.agency.id].rate.acquire)
            call.seconds = time.monotonic() - started
        except Exception as exc:
            log.exception("the call of %s failed in the worker", call.request.request_id)
            call.outcome = Outcome(kind=OutcomeKind.TRANSIENT, reason=f"worker error: {type(exc).__name__}: {exc}")
        finally:
            for middleware in reversed(ran):
                try:
                    middleware.after_call(call)
                except Exception:
                    log.exception("%s.after_call failed", type(middleware).__name__)
        if not call.session.hand_back(lambda: self._finish(call)):
            # That connection is gone: the broker redelivers the message.
            log.warning("outcome of %s dropped, the connection closed", call.request.request_id)

    # --- 3. the outcome (the ioloop) -------------------------------------------------------

    def _finish(self, call: Call) -> None:
        session = call.session
        session.in_flight -= 1
        call.finished = True  # its ``sent`` announcement, if still pending, is skipped
        if session.closing:
            return  # not acked: the broker redelivers it; the agency sees the same request id again
        assert call.outcome is not None
        try:
            decision = outcomes.decide(call.outcome, agency=call.agency, plan=self.plans[call.agency.id],
                                       names=self.names, kind=call.kind, body=call.body, headers=call.headers,
                                       attempt=call.request.attempt, detail=call.detail(), now=time.time())
        except Exception:  # a bug, not the broker: left unacked, the quorum queue's delivery limit ends it
            log.exception("no decision for the outcome of %s", call.request.request_id)
            call.delivery.abandon()
            return
        self._publish(call, decision)

    def _publish(self, call: Call, decision: outcomes.Decision) -> None:
        """Publish ``decision`` for the delivery, which is acked once the broker confirmed it all."""
        try:
            for message in decision.publishes:
                call.delivery.publish(message.exchange, message.routing_key, message.body, message.headers)
        except Exception as exc:  # noqa: BLE001 - a channel that broke under us: redelivered
            log.warning("could not finish %s: %r", call.request.request_id, exc,
                        extra=correlation(call.body, call.headers))
            call.delivery.abandon()
            return
        call.delivery.seal()
        if decision.verdict == "retry":
            metrics.RETRIES.labels(call.agency.id).inc()
        elif decision.verdict == "dead":
            metrics.DEAD_LETTERED.labels(call.agency.id).inc()
            log.warning("dead-lettered after %d attempt(s): %s", call.request.attempt, decision.reason[:200],
                        extra=correlation(call.body, call.headers))
