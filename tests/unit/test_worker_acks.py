"""Acks of a worker session (broker/acks.py, broker/worker.py): several at once only when all are confirmed."""

from __future__ import annotations

from broker.acks import AckLedger, SentAnnouncements
from broker.worker import REPUBLISH_DELAY_FIRST, _CallState, _Delivery, _Session, republish_delay


class _Channel:
    def __init__(self):
        self.is_open = True
        self.sent: list[tuple] = []

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.sent.append(("ack", tag, multiple))

    def basic_nack(self, tag: int, requeue: bool = True) -> None:
        self.sent.append(("nack", tag, requeue))

    def basic_reject(self, tag: int, requeue: bool = True) -> None:
        self.sent.append(("reject", tag, requeue))


class _Timers:
    """Stands in for the ioloop's timers: ``run()`` fires what is due after ``seconds``."""

    def __init__(self):
        self.pending: list[tuple[float, object]] = []

    def call_later(self, delay, callback):
        self.pending.append((delay, callback))

    def run(self):
        pending, self.pending = self.pending, []
        for _delay, callback in pending:
            callback()


class _Publishing:
    """Stands in for a ``_Session``: counts publishes and settles confirms like ``_on_settled``."""

    def __init__(self, *ledgers: AckLedger):
        self.ledgers = list(ledgers)
        self.published: list[_Delivery] = []
        self.ioloop = _Timers()
        self.closing = False

    def publish(self, exchange, routing_key, body, headers, *, token) -> None:
        self.published.append(token)

    def settle(self, acked: list, failed: list) -> None:
        _Session._settle(self, acked, failed)


def _deliveries(session: _Publishing, ledger: AckLedger, tags: list[int], publishes: int = 1) -> list[_Delivery]:
    out = []
    for tag in tags:
        ledger.received(tag)
        delivery = _Delivery(session, ledger, tag, f"req-{tag}")
        for _ in range(publishes):
            delivery.publish("sp.status", "k", {})
        delivery.seal()
        out.append(delivery)
    return out


def test_a_contiguous_run_of_confirmed_deliveries_is_acked_in_one_frame():
    channel = _Channel()
    ledger = AckLedger(channel)
    session = _Publishing(ledger)
    d = _deliveries(session, ledger, [1, 2, 3, 4])
    session.settle(d, [])
    assert channel.sent == [("ack", 4, True)]
    assert ledger.open == {}


def test_a_delivery_still_waiting_for_a_confirm_is_never_covered_by_a_neighbours_ack():
    channel = _Channel()
    ledger = AckLedger(channel)
    session = _Publishing(ledger)
    d = _deliveries(session, ledger, [1, 2, 3, 4, 5])
    session.settle([d[0], d[1], d[3], d[4]], [])  # 3 is not confirmed yet
    assert channel.sent == [("ack", 2, True), ("ack", 4, False), ("ack", 5, False)]
    assert list(ledger.open) == [3]
    session.settle([d[2]], [])
    assert channel.sent[-1] == ("ack", 3, False)
    assert ledger.open == {}


def test_a_delivery_with_one_of_two_publishes_confirmed_is_not_acked():
    channel = _Channel()
    ledger = AckLedger(channel)
    session = _Publishing(ledger)
    d = _deliveries(session, ledger, [1, 2], publishes=2)
    session.settle([d[0], d[0], d[1]], [])  # d[1]'s second publish is still out
    assert channel.sent == [("ack", 1, False)]
    session.settle([d[1]], [])
    assert channel.sent == [("ack", 1, False), ("ack", 2, False)]


def test_a_refused_publish_is_published_again_after_a_pause_and_its_delivery_acked_once_confirmed():
    channel = _Channel()
    ledger = AckLedger(channel)
    session = _Publishing(ledger)
    d = _deliveries(session, ledger, [1, 2, 3])
    session.settle([d[0], d[2]], [d[1]])  # the publish for 2 was nacked or returned
    # 2 stays open meanwhile, so no multiple ack covers it: 1 and 3 are acked on their own.
    assert channel.sent == [("ack", 1, False), ("ack", 3, False)]
    assert [delay for delay, _ in session.ioloop.pending] == [REPUBLISH_DELAY_FIRST]
    assert len(session.published) == 3
    session.ioloop.run()
    assert session.published[3:] == [d[1]]  # published again, never handed back to the queue
    session.settle([], [d[1]])  # the broker is still in trouble
    assert [delay for delay, _ in session.ioloop.pending] == [2 * REPUBLISH_DELAY_FIRST]
    session.ioloop.run()
    session.settle([d[1]], [])
    assert channel.sent == [("ack", 1, False), ("ack", 3, False), ("ack", 2, False)]
    assert ledger.open == {}


def test_every_message_of_a_refused_round_is_published_again_with_its_own_exchange_and_key():
    channel = _Channel()
    ledger = AckLedger(channel)
    session = _Publishing(ledger)
    ledger.received(1)
    delivery = _Delivery(session, ledger, 1, "req-1")
    delivery.publish("sp.retry.5s", "company-registry", {"request_id": "req-1"}, {"x-attempt": 2})
    delivery.publish("sp.status", "status.retry", {"event_id": "e1"})
    delivery.seal()
    session.settle([delivery], [delivery])  # one confirmed, one not
    assert channel.sent == []
    session.ioloop.run()
    assert delivery.published == [("sp.retry.5s", "company-registry", {"request_id": "req-1"}, {"x-attempt": 2}),
                                  ("sp.status", "status.retry", {"event_id": "e1"}, None)]
    session.settle([delivery, delivery], [])
    assert channel.sent == [("ack", 1, False)]


def test_the_pause_before_publishing_again_doubles_up_to_a_bound():
    assert [republish_delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert republish_delay(10**6) == 30


def test_nothing_is_published_again_once_the_channel_or_session_is_gone():
    for gone in ("channel", "session"):
        channel = _Channel()
        ledger = AckLedger(channel)
        session = _Publishing(ledger)
        d = _deliveries(session, ledger, [1])
        session.settle([], d)
        if gone == "channel":
            channel.is_open = False  # the broker has the message back already
        else:
            session.closing = True
        session.ioloop.run()
        assert channel.sent == [] and len(session.published) == 1


def test_an_abandoned_delivery_stays_unacked_and_stops_every_multiple_ack():
    channel = _Channel()
    ledger = AckLedger(channel)
    session = _Publishing(ledger)
    d = _deliveries(session, ledger, [1, 2, 3])
    d[0].abandon()  # its channel broke under it: left for the broker to redeliver
    session.settle(d, [])
    assert channel.sent == [("ack", 2, False), ("ack", 3, False)]
    assert list(ledger.open) == [1]


def test_a_delivery_settled_outside_a_batch_of_confirms_is_acked_at_once():
    channel = _Channel()
    ledger = AckLedger(channel)
    ledger.received(1)
    delivery = _Delivery(_Publishing(ledger), ledger, 1, "req-1")
    delivery.seal()  # nothing was published for it
    assert channel.sent == [("ack", 1, False)]


def test_an_unreadable_message_is_rejected_without_touching_its_neighbours():
    channel = _Channel()
    ledger = AckLedger(channel)
    session = _Publishing(ledger)
    d = _deliveries(session, ledger, [1])
    ledger.received(2)
    ledger.refuse(2, requeue=False)
    session.settle(d, [])
    assert channel.sent == [("reject", 2, False), ("ack", 1, False)]


def test_nothing_is_acked_on_a_closed_channel():
    channel = _Channel()
    ledger = AckLedger(channel)
    session = _Publishing(ledger)
    d = _deliveries(session, ledger, [1, 2])
    channel.is_open = False
    session.settle(d, [])
    assert channel.sent == []


def test_acks_of_two_channels_never_mix():
    a, b = _Channel(), _Channel()
    la, lb = AckLedger(a), AckLedger(b)
    session = _Publishing(la, lb)
    da = _deliveries(session, la, [1, 2])
    db = _deliveries(session, lb, [1, 2])
    session.settle([da[0], da[1], db[1]], [])
    assert a.sent == [("ack", 2, True)]
    assert b.sent == [("ack", 2, False)]
    assert list(lb.open) == [1]


class _Loop:
    """A fake ioloop: timers are kept, and run by the test."""

    def __init__(self):
        self.timers: list[tuple[float, object]] = []

    def call_later(self, delay, callback):
        handle = (delay, callback)
        self.timers.append(handle)
        return handle

    def remove_timeout(self, handle) -> None:
        self.timers.remove(handle)

    def run_next(self) -> None:
        _delay, callback = self.timers.pop(0)
        callback()


def test_sent_events_share_one_timer_and_skip_calls_that_finished(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("broker.acks.time.monotonic", lambda: now[0])
    loop = _Loop()
    pending = SentAnnouncements(loop, after=1.0)
    announced: list[str] = []
    calls = {}
    for name, at in (("a", 100.0), ("b", 100.2), ("c", 100.4)):
        now[0] = at
        calls[name] = _CallState(started=at, redelivered=False)
        pending.add(calls[name], lambda name=name: announced.append(name))
    assert len(loop.timers) == 1  # one timer for all three
    calls["a"].finished = True  # answered quickly: no sent event
    now[0] = 101.0
    loop.run_next()
    assert announced == []  # b is not due until 101.2
    assert len(loop.timers) == 1
    assert abs(loop.timers[0][0] - 0.2) < 1e-9
    now[0] = 101.2
    loop.run_next()
    assert announced == ["b"]  # still running after 1 s
    calls["c"].finished = True
    now[0] = 101.4
    loop.run_next()
    assert announced == ["b"]
    assert loop.timers == [] and not pending.queue


def test_a_call_still_running_is_announced_even_when_later_ones_finished(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("broker.acks.time.monotonic", lambda: now[0])
    loop = _Loop()
    pending = SentAnnouncements(loop, after=1.0)
    announced: list[int] = []
    states = []
    for i in range(5):
        now[0] = i * 0.1
        state = _CallState(started=now[0], redelivered=False)
        states.append(state)
        pending.add(state, lambda i=i: announced.append(i))
    for i in (1, 2, 3, 4):
        states[i].finished = True
    now[0] = 1.0
    loop.run_next()
    assert announced == [0]
    assert loop.timers == [] and not pending.queue


# --- a publishing channel that refuses is replaced (``_Session._renew_publishing``) -----------

class _PubChannel:
    """A publishing channel: records confirm mode, close callbacks and whether it was closed."""

    numbers = iter(range(1, 10**6))

    def __init__(self):
        self.channel_number = next(self.numbers)
        self.is_open = True
        self.close_callbacks = []

    def add_on_close_callback(self, callback):
        self.close_callbacks.append(callback)

    def add_on_return_callback(self, _callback):
        pass

    def confirm_delivery(self, ack_nack_callback, callback):
        self.on_confirm, self.on_ready = ack_nack_callback, callback

    def basic_publish(self, *args, **kwargs):
        pass

    def close(self):
        self.is_open = False
        for callback in self.close_callbacks:
            callback(self, "closed by the client")


class _Connection:
    def __init__(self):
        self.opening: list = []  # on_open callbacks of channels asked for and not opened yet
        self.is_open = True

    def channel(self, on_open_callback):
        self.opening.append(on_open_callback)

    def open_next(self) -> _PubChannel:
        channel = _PubChannel()
        self.opening.pop(0)(channel)
        return channel


def _renewing_session(monkeypatch) -> tuple[_Session, _Connection, AckLedger, _Channel]:
    import types

    from broker import worker
    monkeypatch.setattr(worker.time, "monotonic", lambda: 100.0)
    session = object.__new__(_Session)
    session.worker = types.SimpleNamespace(agencies={})
    session.connection = _Connection()
    session.ioloop = _Timers()
    session.closing = False
    session.window = None
    session.window_since = 0.0
    session.renewing = False
    session.renew_started = 0.0
    session.retired = []
    consumer = _Channel()
    ledger = AckLedger(consumer)
    session.ledgers = [ledger]
    session._open_consumers = lambda: None
    session._on_channel_closed = lambda channel, reason: setattr(session, "ended_by", (channel, reason))
    first = _PubChannel()
    session._on_publish_channel(first)
    first.on_ready(None)
    return session, session.connection, ledger, consumer


def _confirm(window, tag: int, *, nack: bool = False) -> None:
    """The broker's ``Basic.Ack``/``Basic.Nack`` for one delivery tag of ``window``'s channel."""
    import types

    import pika.spec
    method = (pika.spec.Basic.Nack if nack else pika.spec.Basic.Ack)(delivery_tag=tag, multiple=False)
    window._on_confirm(types.SimpleNamespace(method=method))


def _counted(name: str) -> float:
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value(name) or 0.0


def test_a_refusal_opens_a_fresh_publishing_channel_and_what_waited_on_the_old_goes_out_there(monkeypatch):
    from broker import worker
    renewals, republished = _counted("satupintu_publish_channel_renewals_total"), _counted(
        "satupintu_republished_deliveries_total")
    session, connection, ledger, consumer = _renewing_session(monkeypatch)
    old = session.window
    _deliveries(session, ledger, [1, 2, 3])
    assert old.in_flight == 3
    monkeypatch.setattr(worker.time, "monotonic", lambda: 105.0)
    _confirm(old, 1)
    _confirm(old, 2, nack=True)  # 3 still waits for its confirm on the old channel
    assert session.renewing and len(connection.opening) == 1
    assert session.window is old  # the old one publishes until the fresh one is ready
    fresh = connection.open_next()
    fresh.on_ready(None)
    assert session.window is not old and session.window.channel is fresh
    assert not old.channel.is_open and session.retired == []  # closed, and that did not end the session
    assert not hasattr(session, "ended_by")
    assert _counted("satupintu_publish_channel_renewals_total") == renewals + 1  # for the operators
    assert _counted("satupintu_republished_deliveries_total") == republished + 2  # 2 and 3
    # 3, which waited on the old channel, counts as refused: both go out again on the fresh one.
    assert consumer.sent == [("ack", 1, False)]
    session.ioloop.run()
    assert session.window.in_flight == 2
    _confirm(old, 3)  # a late confirm on the old channel settles nothing
    assert consumer.sent == [("ack", 1, False)]
    _confirm(session.window, 1)
    _confirm(session.window, 2)
    assert consumer.sent == [("ack", 1, False), ("ack", 2, False), ("ack", 3, False)]


def test_a_burst_of_refusals_replaces_the_channel_once(monkeypatch):
    from broker import worker
    session, connection, ledger, _consumer = _renewing_session(monkeypatch)
    _deliveries(session, ledger, [1, 2, 3])
    old = session.window
    monkeypatch.setattr(worker.time, "monotonic", lambda: 105.0)
    _confirm(old, 1, nack=True)
    _confirm(old, 2, nack=True)  # while the fresh one opens
    assert len(connection.opening) == 1
    connection.open_next().on_ready(None)  # 3, still waiting on the old one, counts as refused
    session.ioloop.run()
    _confirm(session.window, 1, nack=True)  # the fresh one refuses at once too
    assert connection.opening == []  # not within RENEW_AFTER of the last renewal
    monkeypatch.setattr(worker.time, "monotonic", lambda: 105.0 + worker.RENEW_AFTER)
    _confirm(session.window, 2, nack=True)
    assert len(connection.opening) == 1


def test_the_current_publishing_channel_closed_by_the_broker_still_ends_the_session(monkeypatch):
    session, _connection, _ledger, _consumer = _renewing_session(monkeypatch)
    channel = session.window.channel
    channel.is_open = False
    for callback in channel.close_callbacks:
        callback(channel, "404")
    assert session.ended_by == (channel, "404")


def test_a_fresh_channel_the_broker_never_opens_is_asked_for_again(monkeypatch):
    from broker import worker
    session, connection, ledger, _consumer = _renewing_session(monkeypatch)
    _deliveries(session, ledger, [1, 2])
    old = session.window
    monkeypatch.setattr(worker.time, "monotonic", lambda: 105.0)
    _confirm(old, 1, nack=True)
    assert len(connection.opening) == 1  # never opened by the broker
    monkeypatch.setattr(worker.time, "monotonic", lambda: 105.0 + worker.RENEW_GIVE_UP - 0.1)
    _confirm(old, 2, nack=True)
    assert len(connection.opening) == 1
    session.ioloop.run()  # both published again, on the old channel still
    monkeypatch.setattr(worker.time, "monotonic", lambda: 105.0 + worker.RENEW_GIVE_UP + 0.1)
    _confirm(old, 3, nack=True)
    assert len(connection.opening) == 2

