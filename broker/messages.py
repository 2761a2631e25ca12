"""The shapes of the messages that cross the broker, built in one place.

Dispatch messages (outbox → ``<ns>.dispatch`` → agency queue) carry one request for one
agency; status events (worker or gateway → ``<ns>.status`` → tracker) carry what
happened to it.  Errors cross the broker as data (type, message, agency, attempt).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Any

from adapters.base import AgencyRequest
from core.domain.ids import uuid7_hex

ORIGIN = f"{socket.gethostname()}:{os.getpid()}"

# Outcome kinds and the request status each one leads to.
OUTCOME_STATUS = {
    "accepted": "accepted",
    "approved": "approved",
    "rejected": "rejected",
    "cancelled": "cancelled",
}


def new_id() -> str:
    """A fresh id: a UUID of version 7 in hex, time first (``gateway/domain/ids.py``: it keys
    an index, where ids made one after another share pages)."""
    return uuid7_hex()


def iso_time(seconds: float) -> str:
    """A ``time.time()`` value as ISO 8601 UTC with ``Z``."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


def utcnow() -> str:
    """Now as ISO 8601 UTC with ``Z``."""
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def agency_request(body: dict[str, Any], headers: dict[str, Any]) -> AgencyRequest:
    request_id, application_id = body["request_id"], body["application_id"]
    # The correlation headers sent to the agency, the empty ones left out, in this order.
    sent: dict[str, str] = {}
    traceparent = headers.get("traceparent")
    if traceparent:
        sent["traceparent"] = str(traceparent)
    if application_id:
        sent["X-Satupintu-Application"] = str(application_id)
    if request_id:
        sent["X-Satupintu-Request"] = str(request_id)
    return AgencyRequest(
        request_id=request_id, application_id=application_id, service=body["service"],
        step=body["step"], agency=body["agency"], operation=body["operation"], payload=body.get("payload") or {},
        attempt=int(headers.get("x-attempt", 1)), reference=body.get("reference"), headers=sent,
    )


def status_event(body: dict[str, Any], *, type: str, status: str | None = None, attempt: int | None = None,
                 reference: str | None = None, reason: str | None = None, output: dict[str, Any] | None = None,
                 detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """A status event about the request in dispatch message ``body``."""
    return {
        "event_id": new_id(),
        "type": type,
        "request_id": body["request_id"],
        "application_id": body["application_id"],
        "service": body["service"],
        "step": body["step"],
        "agency": body["agency"],
        "status": status,
        "attempt": attempt,
        "reference": reference,
        "reason": reason,
        "output": output,
        "detail": detail or {},
        "origin": ORIGIN,
        "occurred_at": utcnow(),
    }


def status_key(event: dict[str, Any]) -> str:
    """Routing key on ``<ns>.status``: ``<service>.<agency>.<status or type>``."""
    return f"{event['service']}.{event['agency']}.{event.get('status') or event['type']}"
