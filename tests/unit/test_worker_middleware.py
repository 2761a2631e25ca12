"""The steps around an agency call (broker/middleware.py), through a worker on the stub session."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

from adapters.base import Outcome, OutcomeKind
from broker.breaker import states
from broker.calls import Call
from broker.middleware import Middleware
from broker.stub import stub_worker
from core.model import Agency

AGENCY = Agency(id="registry", name="Registry", adapter="scripted", endpoint="http://127.0.0.1:1", file="r.yaml",
                retry_delays=(5, 30), max_attempts=5, failure_threshold=2, reset_after=10, concurrency=2)


def dispatch(n: int, **extra) -> dict:
    return {"message_id": f"msg-{n}", "kind": "send", "request_id": f"req-{n}", "application_id": f"app-{n}",
            "service": "svc", "step": "company", "agency": "registry", "operation": "register", "payload": {},
            **extra}


def _types(session) -> list[str]:
    return [m.body.get("type") or m.exchange for m in session.published]


class Gate:
    """An agency whose calls wait at a gate: counts how many are inside at once."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.inside = self.most = 0
        self.by_request: dict[str, int] = {}
        self.overlap = False

    def __call__(self, _kind, request):
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
            self.by_request[request.request_id] = self.by_request.get(request.request_id, 0) + 1
            if self.by_request[request.request_id] > 1:
                self.overlap = True
        self.open.wait(30)
        with self.lock:
            self.inside -= 1
            self.by_request[request.request_id] -= 1
        return Outcome(kind=OutcomeKind.APPROVED)


def test_an_agencys_calls_never_exceed_its_concurrency():
    gate = Gate()
    worker, session, adapters = stub_worker(AGENCY, answer=gate)
    try:
        for n in range(6):
            session.deliver(dispatch(n))
        threading.Timer(0.3, gate.open.set).start()  # lets the calls end; the bound is what is asserted
        session.join()
        assert gate.most <= AGENCY.concurrency
        assert len(adapters["registry"].calls) == 6
    finally:
        worker.close()


def test_two_copies_of_one_request_are_never_called_at_once_and_the_second_is_looked_up_first():
    gate = Gate()
    agency = dataclasses.replace(AGENCY, lookup_before_resend=True)

    def answer(kind, request):
        return None if kind == "lookup" else gate(kind, request)
    worker, session, adapters = stub_worker(agency, answer=answer)
    try:
        session.deliver(dispatch(1))
        session.deliver(dispatch(1))  # published twice by a relay
        threading.Timer(0.3, gate.open.set).start()
        session.join()
        assert not gate.overlap
        assert [kind for kind, _ in adapters["registry"].calls] == ["lookup", "send", "lookup", "send"]
    finally:
        worker.close()


def test_transient_failures_open_the_breaker_and_later_messages_are_parked_without_an_attempt():
    worker, session, adapters = stub_worker(AGENCY, answer=lambda kind, request: Outcome(
        kind=OutcomeKind.TRANSIENT, reason="HTTP 503"))
    try:
        for n in range(2):
            session.deliver(dispatch(n))
        session.join()
        assert states()["registry"] == "open"
        session.published.clear()
        session.deliver(dispatch(9), {"x-attempt": 3})
        assert len(adapters["registry"].calls) == 2  # not called
        parked, event = session.published
        assert parked.exchange == "stub.retry.30s" and parked.headers["x-attempt"] == 3
        assert event.body["type"] == "deferred" and "circuit breaker" in event.body["reason"]
        session.confirm()
        assert session.acked == [(3, True)]  # the two retries and the parked one
    finally:
        worker.close()


def test_an_answer_closes_a_half_open_breaker():
    answers = iter([Outcome(kind=OutcomeKind.TRANSIENT)] * 2 + [Outcome(kind=OutcomeKind.REJECTED)])
    agency = dataclasses.replace(AGENCY, reset_after=0)
    worker, session, _ = stub_worker(agency, answer=lambda kind, request: next(answers))
    try:
        for n in range(2):
            session.deliver(dispatch(n))
        session.join()
        assert states()["registry"] == "half-open"  # open, and the cool-down (0 s) is over
        session.deliver(dispatch(3))  # the probe
        session.join()
        assert states()["registry"] == "closed"
    finally:
        worker.close()


def test_a_maintenance_window_parks_the_message_until_it_ends():
    now = dt.datetime.now(dt.UTC)
    window = {"from": (now - dt.timedelta(minutes=1)).isoformat(), "until": (now + dt.timedelta(seconds=20)).isoformat()}
    worker, session, adapters = stub_worker(dataclasses.replace(AGENCY, maintenance=(window,)))
    try:
        session.deliver(dispatch(1))
        assert adapters["registry"].calls == []
        assert session.published[0].exchange == "stub.retry.30s"
        assert "maintenance window of registry" in session.published[1].body["reason"]
    finally:
        worker.close()


def test_a_send_still_running_after_announce_after_is_announced_once_and_a_fast_one_is_not():
    gate = Gate()

    def answer(kind, request):
        return gate(kind, request) if request.request_id == "req-1" else Outcome(kind=OutcomeKind.APPROVED)
    worker, session, _ = stub_worker(AGENCY, announce_after=1.0, answer=answer)
    try:
        session.deliver(dispatch(2))  # fast: answered before its announcement falls due
        session.join()
        session.deliver(dispatch(1))  # slow: waits at the gate
        session.advance(1.0)
        session.advance(1.0)
        gate.open.set()
        session.join()
        sent = [m.body["request_id"] for m in session.published if m.body.get("status") == "sent"]
        assert sent == ["req-1"]
        assert _types(session) == ["outcome", "attempt", "outcome"]
    finally:
        worker.close()


def test_with_announce_after_zero_every_send_is_announced_before_it_is_called():
    worker, session, _ = stub_worker(AGENCY, announce_after=0)
    try:
        session.deliver(dispatch(1))
        assert _types(session) == ["attempt"]
        session.join()
        assert _types(session) == ["attempt", "outcome"]
        sent = session.published[0]
        assert sent.body["status"] == "sent" and sent.token is None  # informational: no delivery waits for it
        session.confirm()
        assert session.acked == [(1, False)]
    finally:
        worker.close()


def test_after_hooks_run_in_reverse_and_only_for_the_middleware_whose_before_hook_ran():
    order: list[str] = []

    class Recording(Middleware):
        def __init__(self, name: str, fail: bool = False):
            self.name, self.fail = name, fail

        def before_call(self, call: Call) -> None:
            order.append(f"before {self.name}")
            if self.fail:
                raise RuntimeError("refused")

        def after_call(self, call: Call) -> None:
            order.append(f"after {self.name}")

    worker, session, adapters = stub_worker(AGENCY)
    try:
        worker.middleware = [Recording("a"), Recording("b"), Recording("c", fail=True), Recording("d")]
        session.deliver(dispatch(1))
        session.join()
        assert order == ["before a", "before b", "before c", "after b", "after a"]
        assert adapters["registry"].calls == []
        assert session.published[0].exchange == "stub.retry.5s"  # a worker error is transient
    finally:
        worker.close()
