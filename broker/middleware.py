"""The cross-cutting steps around an agency call, as middleware (as in Dramatiq).

Each middleware has three no-op hooks; the worker runs them in the order of its list:

- ``before_delivery(call)`` on the session's ioloop when a delivery arrives; a
  ``Deferral`` parks the message in a delay tier instead of calling (the hooks after it
  do not run, so a breaker's probe is never taken for a message parked anyway);
- ``before_call(call)`` on the call thread, just before the adapter is called;
- ``after_call(call)`` on the call thread once the outcome is in ``call.outcome``, in
  reverse order, and only for the middleware whose ``before_call`` ran.

Here: maintenance windows, the circuit breaker, the ``sent`` announcement, the request-id
claim, the agency's call slots and the call metrics.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from adapters.base import Outcome, OutcomeKind
from core import metrics

from . import messages
from .breaker import CircuitBreaker
from .calls import Call
from .limits import AgencyLimits
from .topology import Names


@dataclass(frozen=True)
class Deferral:
    """Why a delivery must wait, and how long at least."""

    wait: float
    reason: str


class Middleware:
    """Hooks around a delivery's agency call; every one a no-op here."""

    def before_delivery(self, call: Call) -> Deferral | None:
        return None

    def before_call(self, call: Call) -> None:
        pass

    def after_call(self, call: Call) -> None:
        pass


class MaintenanceWindows(Middleware):
    """An agency in a maintenance window (``maintenance:`` in its file) is not called until it ends."""

    def __init__(self, limits: dict[str, AgencyLimits]):
        self.limits = limits

    def before_delivery(self, call: Call) -> Deferral | None:
        wait = self.limits[call.agency.id].maintenance_remaining()
        return Deferral(wait, f"maintenance window of {call.agency.id}") if wait else None


class CircuitBreakers(Middleware):
    """An agency whose breaker is open is not called; each outcome feeds the breaker: only a
    transient failure counts against the agency, any answer shows it is up."""

    def __init__(self, breakers: dict[str, CircuitBreaker]):
        self.breakers = breakers

    def before_delivery(self, call: Call) -> Deferral | None:
        breaker = self.breakers[call.agency.id]
        if breaker.allow():
            return None
        return Deferral(max(breaker.retry_in(), 0.001), f"circuit breaker of {call.agency.id} is open")

    def after_call(self, call: Call) -> None:
        breaker = self.breakers[call.agency.id]
        if isinstance(call.outcome, Outcome) and call.outcome.kind is OutcomeKind.TRANSIENT:
            breaker.record_failure()
        else:
            breaker.record_success()


class SentAnnouncement(Middleware):
    """The ``sent`` event ("a worker is calling the agency"), only for a send still running
    ``after`` seconds after its delivery arrived (0: before every send).  Most calls answer
    within milliseconds and their outcome event says when the call started and how long it
    took, so a fast call costs one message and one tracker transaction instead of two."""

    def __init__(self, names: Names, after: float):
        self.names = names
        self.after = after

    def before_delivery(self, call: Call) -> None:
        if call.kind != "send":
            return None
        if self.after <= 0:
            self._announce(call)
        else:
            call.session.call_later(self.after, lambda: self._announce(call))
        return None

    def _announce(self, call: Call) -> None:
        if call.finished or call.session.closing:
            return
        event = messages.status_event(call.body, type="attempt", status="sent", attempt=call.request.attempt,
                                      detail={"redelivered": call.redelivered,
                                              "started_at": messages.iso_time(call.started)})
        # Informational: nothing waits for its confirm (the outcome follows on the same channel).
        call.session.publish(self.names.status, messages.status_key(event), event, None, token=None)


class RequestClaims(Middleware):
    """One call at a time per request id in this process: a second copy of a request (published
    twice, redelivered) waits for the first, then counts as maybe sent (looked up first)."""

    def __init__(self) -> None:
        self.busy: set[str] = set()
        self.changed = threading.Condition()

    def before_call(self, call: Call) -> None:
        request_id = call.request.request_id
        with self.changed:
            if request_id in self.busy:
                call.maybe_sent = True
                self.changed.wait_for(lambda: request_id not in self.busy)
            self.busy.add(request_id)

    def after_call(self, call: Call) -> None:
        with self.changed:
            self.busy.discard(call.request.request_id)
            self.changed.notify_all()


class CallSlots(Middleware):
    """At most the agency's ``limits.concurrency`` calls at once in this process."""

    def __init__(self, limits: dict[str, AgencyLimits]):
        self.limits = limits

    def before_call(self, call: Call) -> None:
        self.limits[call.agency.id].slots.acquire()

    def after_call(self, call: Call) -> None:
        self.limits[call.agency.id].slots.release()


class CallMetrics(Middleware):
    """The call's duration by agency, operation and outcome, and a log line with its ids."""

    def after_call(self, call: Call) -> None:
        request = call.request
        metrics.observe_agency_call(call.agency.id, request.operation, call.kind, call.outcome, call.seconds or 0.0,
                                    {"application_id": request.application_id, "step": request.step,
                                     "request_id": request.request_id,
                                     "traceparent": request.headers.get("traceparent")})
