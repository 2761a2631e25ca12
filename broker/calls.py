"""One delivery's agency call: what the middleware hooks see, and the adapter invocation.

``Call`` is made on the session's ioloop when a delivery arrives, handed to a pool thread
for the call, and back to the ioloop with its outcome.  ``call_agency`` runs the adapter
and never raises: an adapter's failure becomes a transient ``Outcome``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.base import Adapter, AgencyRequest, Outcome, OutcomeKind
from core.domain.errors import AgencyError, UnsupportedOperation
from core.model import Agency

from . import messages

log = logging.getLogger("satupintu.worker")

# The outcome of a poll or cancel the agency's adapter does not offer.
UNSUPPORTED = "unsupported"


@dataclass(eq=False)
class Call:
    """One delivery and its agency call, from arrival to outcome."""

    session: Any  # the session the delivery came on: ``WorkerSession`` or ``StubSession``
    delivery: Any  # ``broker.delivery.Delivery``
    agency: Agency
    adapter: Adapter
    kind: str  # "send" | "poll" | "cancel"
    body: dict[str, Any]
    headers: dict[str, Any]
    request: AgencyRequest
    maybe_sent: bool  # it may have been filed before: look it up first where the agency can
    redelivered: bool
    started: float  # time.time(): the delivery's arrival, then (``before_call``) the call's start
    seconds: float | None = None  # the call's duration, measured inside the agency's slot
    outcome: Outcome | str | None = None
    finished: bool = False  # its outcome is back on the ioloop
    extra: dict[str, Any] = field(default_factory=dict)  # for middleware of third parties

    def detail(self) -> dict[str, Any]:
        """When the call started and how long it took: operators read the agency's latency here."""
        out: dict[str, Any] = {"started_at": messages.iso_time(self.started)}
        if self.seconds is not None:
            out["duration_ms"] = round(self.seconds * 1000, 1)
        if self.redelivered:
            out["redelivered"] = True
        return out


def call_agency(call: Call, pace: Callable[[], None]) -> Outcome | str:
    """Run the adapter for ``call``; never raises.  An ``Outcome``, or ``UNSUPPORTED``.

    ``pace()`` waits for the agency's rate limit before each request to it (a lookup is one)."""
    adapter, agency, request = call.adapter, call.agency, call.request
    try:
        pace()
        if call.kind == "poll":
            return adapter.poll(request)
        if call.kind == "cancel":
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
        return UNSUPPORTED
    except AgencyError as exc:
        return Outcome.from_error(exc)
    except Exception as exc:
        log.exception("adapter %s raised", agency.adapter,
                      extra={"application_id": request.application_id, "request_id": request.request_id,
                             "agency": agency.id, "traceparent": request.headers.get("traceparent")})
        return Outcome(kind=OutcomeKind.TRANSIENT, reason=f"adapter error: {type(exc).__name__}: {exc}")
