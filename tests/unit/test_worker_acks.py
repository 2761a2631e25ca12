"""A delivery is acked once everything published for it is confirmed, several in one frame
only when all of them are (broker/delivery.py), on the stub session (broker/stub.py)."""

from __future__ import annotations

import pytest

from adapters.base import Outcome, OutcomeKind
from broker.delivery import REPUBLISH_DELAY_FIRST, AckLedger, republish_delay, settle
from broker.stub import StubChannel, stub_worker
from core.model import Agency

AGENCY = Agency(id="registry", name="Registry", adapter="scripted", endpoint="http://127.0.0.1:1", file="r.yaml",
                retry_delays=(5, 30), max_attempts=3)


def dispatch(n: int, **extra) -> dict:
    return {"message_id": f"msg-{n}", "kind": "send", "request_id": f"req-{n}", "application_id": f"app-{n}",
            "service": "svc", "step": "company", "agency": "registry", "operation": "register", "payload": {},
            **extra}


@pytest.fixture
def stub():
    worker, session, _adapters = stub_worker(AGENCY)
    yield session
    worker.close()


def test_a_delivery_is_acked_only_after_its_outcome_is_confirmed(stub):
    tag = stub.deliver(dispatch(1))
    stub.join()
    [event] = stub.published
    assert event.exchange == "stub.status" and event.body["status"] == "approved"
    assert stub.acked == []
    stub.confirm()
    assert stub.acked == [(tag, False)]


def test_a_contiguous_run_of_confirmed_deliveries_is_acked_in_one_frame(stub):
    for n in range(4):
        stub.deliver(dispatch(n))
    stub.join()
    stub.confirm()
    assert stub.acked == [(4, True)]


def test_a_delivery_still_waiting_for_a_confirm_is_never_covered_by_a_neighbours_ack(stub):
    tags = [stub.deliver(dispatch(n)) for n in range(5)]
    stub.join()
    [third] = [m for m in stub.unconfirmed if m.token.tag == tags[2]]
    stub.unconfirmed.remove(third)  # its confirm is late
    stub.confirm()
    assert stub.acked == [(tags[1], True), (tags[3], False), (tags[4], False)]
    stub.unconfirmed.append(third)
    stub.confirm()
    assert stub.acked[-1] == (tags[2], False)


def test_a_retry_is_acked_only_when_both_its_messages_are_confirmed():
    worker, session, _ = stub_worker(AGENCY, answer=lambda kind, request: Outcome(kind=OutcomeKind.TRANSIENT,
                                                                                  reason="HTTP 503"))
    try:
        tag = session.deliver(dispatch(1))
        session.join()
        assert [m.exchange for m in session.published] == ["stub.retry.5s", "stub.status"]
        session.confirm(1)
        assert session.acked == []
        session.confirm(1)
        assert session.acked == [(tag, False)]
    finally:
        worker.close()


def test_a_refused_publish_is_published_again_after_a_pause_never_handed_back(stub):
    tag = stub.deliver(dispatch(1))
    stub.join()
    stub.refuse()  # nacked, or returned for want of a queue
    assert stub.acked == [] and stub.channel.nacks == []
    stub.advance(REPUBLISH_DELAY_FIRST - 0.01)
    assert len(stub.published) == 1
    stub.advance(0.01)
    assert len(stub.published) == 2 and stub.published[1].body == stub.published[0].body
    stub.refuse()  # the broker is still in trouble: the pause doubles
    stub.advance(2 * REPUBLISH_DELAY_FIRST)
    assert len(stub.published) == 3
    stub.confirm()
    assert stub.acked == [(tag, False)]


def test_the_pause_before_publishing_again_doubles_up_to_a_bound():
    assert [republish_delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert republish_delay(10**6) == 30


def test_nothing_is_published_again_once_the_channel_or_session_is_gone():
    for gone in ("channel", "session"):
        worker, session, _ = stub_worker(AGENCY)
        try:
            session.deliver(dispatch(1))
            session.join()
            session.refuse()
            if gone == "channel":
                session.channel.is_open = False  # the broker has the message back already
            else:
                session.closing = True
            session.advance(60)
            assert session.acked == [] and len(session.published) == 1
        finally:
            worker.close()


def test_an_outcome_back_after_the_session_closed_is_not_published(stub):
    stub.deliver(dispatch(1))
    stub.closing = True
    stub.join()
    assert stub.published == [] and stub.acked == []


def test_an_unreadable_message_is_rejected_without_touching_its_neighbours(stub):
    first = stub.deliver(dispatch(1))
    bad = stub.deliver({"agency": "registry"}, raw=b"{not json")
    stub.join()
    stub.confirm()
    assert stub.rejected == [bad]
    assert stub.acked == [(first, False)]


def test_a_message_for_an_agency_this_worker_does_not_serve_is_rejected(stub):
    tag = stub.deliver(dispatch(1, agency="elsewhere"))
    assert stub.rejected == [tag] and stub.published == []


# --- the ledger on its own: what ``multiple`` may cover ---------------------------------------

class Token:
    """A delivery as ``settle`` sees it: confirmed (ok or not) once per publish."""

    def __init__(self, ledger: AckLedger, tag: int):
        self.ledger, self.tag = ledger, tag

    def confirmed(self, ok: bool) -> None:
        self.ledger.ready(self.tag)


def test_acks_of_two_channels_never_mix():
    a, b = StubChannel(), StubChannel()
    la, lb = AckLedger(a), AckLedger(b)
    for ledger in (la, lb):
        ledger.received(1)
        ledger.received(2)
    settle([la, lb], [Token(la, 1), Token(la, 2), Token(lb, 2)], [])
    assert a.acks == [(2, True)]
    assert b.acks == [(2, False)]
    assert list(lb.open) == [1]


def test_nothing_is_acked_on_a_closed_channel():
    channel = StubChannel()
    ledger = AckLedger(channel)
    ledger.received(1)
    channel.is_open = False
    settle([ledger], [Token(ledger, 1)], [])
    assert channel.acks == []


def test_a_refused_delivery_goes_out_at_once_and_no_longer_stops_a_multiple_ack():
    channel = StubChannel()
    ledger = AckLedger(channel)
    for tag in (1, 2, 3):
        ledger.received(tag)
    ledger.refuse(2, requeue=True)
    settle([ledger], [Token(ledger, 1), Token(ledger, 3)], [])
    assert channel.nacks == [2]
    assert channel.acks == [(3, True)]  # 1 and 3: 2 is no longer the broker's to ack
