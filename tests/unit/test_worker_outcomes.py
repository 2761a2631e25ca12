"""What an outcome leads to (broker/outcomes.py): a table, no broker."""

from __future__ import annotations

import pytest

from adapters.base import Outcome, OutcomeKind
from broker.calls import UNSUPPORTED
from broker.outcomes import decide, defer
from broker.retry import RetryPlan
from broker.topology import Names
from core.model import Agency

NAMES = Names("ns")
SYNC = Agency(id="tax", name="Tax", adapter="soap", endpoint="x", file="tax.yaml", max_attempts=3,
              retry_delays=(5, 30))
POLLED = Agency(id="land", name="Land", adapter="rest", endpoint="x", file="land.yaml", decisions="poll",
                poll_interval=5, poll_backoff=2, poll_max_interval=20, poll_deadline=600, retry_delays=(5,))
BODY = {"message_id": "m1", "kind": "send", "request_id": "req-1", "application_id": "app-1", "service": "svc",
        "step": "s", "agency": "tax", "operation": "file", "payload": {}, "reference": None}
NOW = 1_790_000_000.0


def _run(outcome, *, agency=SYNC, kind="send", attempt=1, headers=None, body=None):
    body = dict(body or BODY, agency=agency.id)
    return decide(outcome, agency=agency, plan=RetryPlan.for_agency(agency), names=NAMES, kind=kind, body=body,
                  headers=dict(headers or {"x-attempt": attempt}), attempt=attempt,
                  detail={"started_at": "t", "duration_ms": 1.0}, now=NOW)


def _shape(decision):
    """(exchange, routing key, event type or the headers that matter) of each message."""
    out = []
    for p in decision.publishes:
        if p.exchange == NAMES.status:
            out.append((p.exchange, p.routing_key, p.body["type"]))
        else:
            out.append((p.exchange, p.routing_key, {k: v for k, v in (p.headers or {}).items()
                                                    if k in ("x-attempt", "x-poll-round", "x-last-error")}))
    return decision.verdict, out


T, P = OutcomeKind.TRANSIENT, OutcomeKind.PERMANENT
CASES = [
    ("approved", dict(outcome=Outcome(kind=OutcomeKind.APPROVED, reference="R")),
     ("outcome", [("ns.status", "svc.tax.approved", "outcome")])),
    ("rejected", dict(outcome=Outcome(kind=OutcomeKind.REJECTED, reason="no")),
     ("outcome", [("ns.status", "svc.tax.rejected", "outcome")])),
    ("accepted, decided by callback", dict(outcome=Outcome(kind=OutcomeKind.ACCEPTED, reference="R")),
     ("outcome", [("ns.status", "svc.tax.accepted", "outcome")])),
    ("transient, first attempt", dict(outcome=Outcome(kind=T, reason="503")),
     ("retry", [("ns.retry.5s", "tax", {"x-attempt": 2, "x-last-error": "503"}), ("ns.status", "svc.tax.retry", "retry")])),
    ("transient, later attempts keep the last delay", dict(outcome=Outcome(kind=T, reason="503"), attempt=2),
     ("retry", [("ns.retry.30s", "tax", {"x-attempt": 3, "x-last-error": "503"}), ("ns.status", "svc.tax.retry", "retry")])),
    ("transient, the last attempt", dict(outcome=Outcome(kind=T, reason="503"), attempt=3),
     ("dead", [("ns.dead", "tax", {"x-attempt": 3, "x-last-error": "503"})])),
    ("permanent, never retried", dict(outcome=Outcome(kind=P, reason="400")),
     ("dead", [("ns.dead", "tax", {"x-attempt": 1, "x-last-error": "400"})])),
    ("a cancel that failed", dict(outcome=Outcome(kind=T, reason="503"), kind="cancel"),
     ("cancel-failed", [("ns.status", "svc.tax.cancel-failed", "cancel-failed")])),
    ("a cancel the adapter cannot make", dict(outcome=UNSUPPORTED, kind="cancel"),
     ("unsupported", [("ns.status", "svc.tax.cancel-unsupported", "cancel-unsupported")])),
    ("accepted by an agency decided by polling: the first poll", dict(outcome=Outcome(kind=OutcomeKind.ACCEPTED,
                                                                                       reference="L-1"), agency=POLLED),
     ("outcome", [("ns.status", "svc.land.accepted", "outcome"),
                  ("ns.retry.5s", "land", {"x-attempt": 1, "x-poll-round": 1})])),
    ("a poll without a decision yet", dict(outcome=Outcome(kind=OutcomeKind.ACCEPTED), agency=POLLED, kind="poll",
                                           headers={"x-poll-round": 2, "x-poll-started": int(NOW) - 60}),
     ("poll", [("ns.retry.20s", "land", {"x-poll-round": 3}), ("ns.status", "svc.land.poll", "poll")])),
    ("a poll past the deadline", dict(outcome=Outcome(kind=OutcomeKind.ACCEPTED), agency=POLLED, kind="poll",
                                      headers={"x-poll-round": 9, "x-poll-started": int(NOW) - 601}),
     ("dead", [("ns.dead", "land", {"x-attempt": 1, "x-poll-round": 9,
                                    "x-last-error": "no decision within 600 s"})])),
    ("a poll with a decision", dict(outcome=Outcome(kind=OutcomeKind.APPROVED), agency=POLLED, kind="poll"),
     ("outcome", [("ns.status", "svc.land.approved", "poll")])),
]


@pytest.mark.parametrize(("case", "given", "expected"), CASES, ids=[c[0] for c in CASES])
def test_what_an_outcome_leads_to(case, given, expected):
    assert _shape(_run(**given)) == expected


def test_the_outcome_event_carries_the_answer_and_how_the_call_went():
    [event] = _run(Outcome(kind=OutcomeKind.APPROVED, reference="NPWP-1", output={"npwp": "1"})).publishes
    assert event.body | {"event_id": None, "occurred_at": None, "origin": None} == {
        "event_id": None, "type": "outcome", "request_id": "req-1", "application_id": "app-1", "service": "svc",
        "step": "s", "agency": "tax", "status": "approved", "attempt": 1, "reference": "NPWP-1", "reason": None,
        "output": {"npwp": "1"}, "detail": {"started_at": "t", "duration_ms": 1.0}, "origin": None,
        "occurred_at": None}


def test_a_dead_letter_keeps_the_agencys_raw_answer():
    [dead] = _run(Outcome(kind=P, reason="bad", raw="<fault/>")).publishes
    assert dead.headers["x-raw-answer"] == "<fault/>"
    assert dead.body["request_id"] == "req-1"


def test_the_first_poll_starts_the_clock_and_carries_the_reference():
    _event, poll = _run(Outcome(kind=OutcomeKind.ACCEPTED, reference="L-1"), agency=POLLED).publishes
    assert poll.body["kind"] == "poll" and poll.body["reference"] == "L-1"
    assert poll.body["message_id"] != BODY["message_id"]
    assert poll.headers["x-poll-started"] == int(NOW) and poll.headers["x-poll-round"] == 1


@pytest.mark.parametrize(("wait", "headers", "tier", "events"), [
    (1, {"x-attempt": 2}, "ns.retry.5s", 1),  # the first tier that is long enough
    (12, {}, "ns.retry.30s", 1),
    (3600, {}, "ns.retry.30s", 1),  # none is: the longest
    (1, {"x-deferred": 1}, "ns.retry.5s", 0),  # the history shows the first wait only
])
def test_a_deferred_message_is_parked_without_spending_an_attempt(wait, headers, tier, events):
    decision = defer(SYNC, NAMES, BODY, headers, wait=wait, reason="circuit breaker of tax is open", maybe_sent=True)
    parked, *rest = decision.publishes
    assert decision.verdict == "deferred"
    assert (parked.exchange, parked.routing_key) == (tier, "tax")
    assert parked.headers["x-deferred"] == headers.get("x-deferred", 0) + 1
    assert parked.headers.get("x-attempt") == headers.get("x-attempt")  # not spent
    assert parked.headers["x-maybe-sent"] is True
    assert len(rest) == events
    if rest:
        assert rest[0].body["type"] == "deferred" and rest[0].body["reason"] == "circuit breaker of tax is open"
