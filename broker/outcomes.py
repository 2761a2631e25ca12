"""What a call's outcome leads to: the messages to publish.  A pure decision, no broker.

``decide`` turns an outcome into a ``Decision``: the status event, a retry through a delay
tier, a dead letter, the next poll; ``defer`` parks a message the agency cannot take now
(circuit breaker open, maintenance window) without spending an attempt.  The worker
publishes a decision's messages for the delivery and acks it once all are confirmed.
Ids and timestamps of the events are fresh; everything else follows from the arguments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from adapters.base import Outcome, OutcomeKind
from core.masking import mask_free_text, personal_values
from core.model import Agency

from . import messages
from .calls import UNSUPPORTED
from .retry import RetryPlan, poll_delays
from .topology import Names


@dataclass(frozen=True)
class Publish:
    """One message to publish for a delivery."""

    exchange: str
    routing_key: str
    body: dict[str, Any]
    headers: dict[str, Any] | None = None


@dataclass(frozen=True)
class Decision:
    """What an outcome led to (``verdict``) and the messages that say so."""

    verdict: str  # outcome | poll | retry | dead | cancel-failed | unsupported | deferred
    publishes: tuple[Publish, ...]
    reason: str = ""


def _event(names: Names, event: dict[str, Any]) -> Publish:
    return Publish(names.status, messages.status_key(event), event)


def decide(outcome: Outcome | str, *, agency: Agency, plan: RetryPlan, names: Names, kind: str,
           body: dict[str, Any], headers: dict[str, Any], attempt: int, detail: dict[str, Any],
           now: float) -> Decision:
    """The messages ``outcome`` of a ``kind`` call leads to; ``detail`` (when the call started,
    how long it took) goes into the outcome and retry events; ``now`` is ``time.time()``."""
    if outcome == UNSUPPORTED:
        event = messages.status_event(body, type=f"{kind}-unsupported", attempt=attempt,
                                      detail={"note": f"agency {agency.id} cannot {kind}; the decision still arrives"})
        return Decision("unsupported", (_event(names, event),))
    assert isinstance(outcome, Outcome)
    if outcome.reason or outcome.raw:  # the agency's free text: masked before the broker or a log keeps it
        personal = personal_values(body.get("payload"))
        outcome = dataclasses.replace(outcome, reason=mask_free_text(outcome.reason, personal),
                                      raw=mask_free_text(outcome.raw, personal))
    if outcome.kind.is_failure:
        if kind == "cancel":
            event = messages.status_event(body, type="cancel-failed", attempt=attempt, reason=outcome.reason)
            return Decision("cancel-failed", (_event(names, event),), outcome.reason or "")
        delay = plan.retry_delay(attempt) if outcome.kind is OutcomeKind.TRANSIENT else None
        if delay is None:
            return dead_letter(names, body, headers, attempt, outcome.reason or "failed", raw=outcome.raw)
        retry_headers = dict(headers, **{"x-attempt": attempt + 1, "x-last-error": outcome.reason or ""})
        event = messages.status_event(body, type="retry", attempt=attempt, reason=outcome.reason,
                                      detail=dict(detail, next_attempt=attempt + 1, delay_seconds=delay))
        return Decision("retry", (Publish(names.retry(delay), agency.id, body, retry_headers), _event(names, event)),
                        outcome.reason or "")
    if kind == "poll" and outcome.kind is OutcomeKind.ACCEPTED:
        return next_poll(agency, plan, names, body, headers, now=now, pending=True)
    event = messages.status_event(body, type="poll" if kind == "poll" else "outcome",
                                  status=messages.OUTCOME_STATUS[outcome.kind.value], attempt=attempt,
                                  reference=outcome.reference or body.get("reference"), reason=outcome.reason,
                                  output=outcome.output, detail=detail)
    publishes = (_event(names, event),)
    if kind == "send" and outcome.kind is OutcomeKind.ACCEPTED and agency.decisions == "poll":
        poll_body = dict(body, kind="poll", reference=outcome.reference, message_id=messages.new_id())
        first = next_poll(agency, plan, names, poll_body,
                          dict(headers, **{"x-poll-started": int(now), "x-poll-round": 0}), now=now, pending=False)
        publishes += first.publishes
    return Decision("outcome", publishes)


def next_poll(agency: Agency, plan: RetryPlan, names: Names, body: dict[str, Any], headers: dict[str, Any], *,
              now: float, pending: bool) -> Decision:
    """The next poll round through a delay tier, or a dead letter once the poll deadline passed;
    ``pending``: the agency said "no decision yet", which the history shows."""
    started = float(headers.get("x-poll-started", now))
    rounds = int(headers.get("x-poll-round", 0))
    if now - started >= agency.poll_deadline:
        return dead_letter(names, body, headers, int(headers.get("x-attempt", 1)),
                           f"no decision within {agency.poll_deadline:g} s")
    delay = plan.poll_delay(rounds)
    publishes = (Publish(names.retry(delay), agency.id, body,
                         dict(headers, **{"x-poll-round": rounds + 1, "x-poll-started": int(started)})),)
    if pending:
        event = messages.status_event(body, type="poll", detail={"round": rounds + 1, "decision": "pending"})
        publishes += (_event(names, event),)
    return Decision("poll", publishes)


def dead_letter(names: Names, body: dict[str, Any], headers: dict[str, Any], attempt: int, reason: str, *,
                raw: str | None = None) -> Decision:
    """To ``<ns>.dead``, with the attempt, the last error and the agency's raw answer."""
    dead_headers = dict(headers, **{"x-attempt": attempt, "x-last-error": reason[:2000]})
    if raw:
        dead_headers["x-raw-answer"] = raw[:2000]
    return Decision("dead", (Publish(names.dead, body["agency"], body, dead_headers),), reason)


def defer(agency: Agency, names: Names, body: dict[str, Any], headers: dict[str, Any], *, wait: float,
          reason: str, maybe_sent: bool) -> Decision:
    """Park a message in the first delay tier of at least ``wait`` seconds (the longest when
    none is), without spending an attempt; only the first deferral shows in the history."""
    tiers = sorted(set(agency.retry_delays) | (set(poll_delays(agency)) if agency.decisions == "poll" else set()))
    delay = next((t for t in tiers if t >= wait), tiers[-1])
    deferred = int(headers.get("x-deferred", 0))
    parked = dict(headers, **{"x-deferred": deferred + 1})
    if maybe_sent:
        parked["x-maybe-sent"] = True
    publishes: tuple[Publish, ...] = (Publish(names.retry(delay), agency.id, body, parked),)
    if not deferred:
        event = messages.status_event(body, type="deferred", attempt=int(headers.get("x-attempt", 1)),
                                      reason=reason, detail={"delay_seconds": delay})
        publishes += (_event(names, event),)
    return Decision("deferred", publishes, reason)
