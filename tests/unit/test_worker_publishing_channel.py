"""A publishing channel that refuses is replaced on the same connection (broker/session.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pika.spec
from prometheus_client import REGISTRY

from broker.session import RENEW_AFTER, RENEW_GIVE_UP, PublishingChannel


class FakeChannel:
    """What ``ConfirmWindow`` uses of a pika channel; keeps the callbacks pika would call."""

    def __init__(self) -> None:
        self.is_open = True
        self.close_callbacks: list = []
        self.published: list[tuple[str, str]] = []

    def add_on_close_callback(self, callback) -> None:
        self.close_callbacks.append(callback)

    def add_on_return_callback(self, _callback) -> None:
        pass

    def confirm_delivery(self, ack_nack_callback, callback) -> None:
        self.on_confirm, self.on_ready = ack_nack_callback, callback

    def basic_publish(self, exchange, routing_key, body, properties, mandatory) -> None:
        self.published.append((exchange, routing_key))

    def confirm(self, tag: int, *, nack: bool = False) -> None:
        """The broker's ``Basic.Ack`` / ``Basic.Nack`` for one delivery tag."""
        method = (pika.spec.Basic.Nack if nack else pika.spec.Basic.Ack)(delivery_tag=tag, multiple=False)
        self.on_confirm(SimpleNamespace(method=method))

    def close(self) -> None:
        self.is_open = False
        for callback in self.close_callbacks:
            callback(self, "closed by the client")


class FakeConnection:
    def __init__(self) -> None:
        self.opening: list = []  # on_open callbacks of channels asked for and not opened yet

    def channel(self, on_open_callback) -> None:
        self.opening.append(on_open_callback)

    def open_next(self) -> FakeChannel:
        channel = FakeChannel()
        self.opening.pop(0)(channel)
        channel.on_ready(None)
        return channel


class Setup:
    def __init__(self) -> None:
        self.now = 100.0
        self.connection = FakeConnection()
        self.settled: list[tuple[list, list]] = []
        self.lost: list = []
        self.ready = False
        self.publishing = PublishingChannel(self.connection, on_settled=lambda a, f: self.settled.append((a, f)),
                                            on_lost=lambda channel, reason: self.lost.append((channel, reason)),
                                            clock=lambda: self.now)
        self.publishing.open(on_ready=lambda: setattr(self, "ready", True))
        self.first = self.connection.open_next()

    def publish(self, *tokens: str) -> None:
        for token in tokens:
            self.publishing.publish("sp.status", "k", {"event_id": token}, None, token)


def _counted(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_a_refusal_opens_a_fresh_channel_and_what_waited_on_the_old_counts_as_refused():
    s = Setup()
    renewals = _counted("satupintu_publish_channel_renewals_total")
    assert s.ready
    s.publish("a", "b", "c")
    s.now += 5
    s.first.confirm(1)
    s.first.confirm(2, nack=True)  # c still waits for its confirm on the old channel
    assert s.settled == [(["a"], []), ([], ["b"])]
    assert len(s.connection.opening) == 1
    assert s.publishing.window.channel is s.first  # the old one publishes until the fresh one is ready
    fresh = s.connection.open_next()
    assert s.publishing.window.channel is fresh
    assert s.settled[-1] == ([], ["c"])  # published again by its delivery, on the fresh channel
    assert not s.first.is_open and s.lost == []  # closed, and that did not end the session
    assert _counted("satupintu_publish_channel_renewals_total") == renewals + 1
    s.first.confirm(3)  # a late confirm on the old channel settles nothing
    assert len(s.settled) == 3
    s.publish("b", "c")
    assert fresh.published == [("sp.status", "k")] * 2


def test_a_burst_of_refusals_replaces_the_channel_once():
    s = Setup()
    s.publish("a", "b", "c")
    s.now += 5
    s.first.confirm(1, nack=True)
    s.first.confirm(2, nack=True)  # while the fresh one opens
    assert len(s.connection.opening) == 1
    fresh = s.connection.open_next()
    s.publish("x", "y")
    fresh.confirm(1, nack=True)  # the fresh one refuses at once too
    assert s.connection.opening == []  # not within RENEW_AFTER of the last renewal
    s.now += RENEW_AFTER
    fresh.confirm(2, nack=True)
    assert len(s.connection.opening) == 1


def test_the_current_publishing_channel_closed_by_the_broker_ends_the_session():
    s = Setup()
    s.first.is_open = False
    for callback in s.first.close_callbacks:
        callback(s.first, "404")
    assert s.lost == [(s.first, "404")]


def test_a_fresh_channel_the_broker_never_opens_is_asked_for_again():
    s = Setup()
    s.publish("a", "b", "c")
    s.now += 5
    s.first.confirm(1, nack=True)
    assert len(s.connection.opening) == 1  # never opened by the broker
    s.now += RENEW_GIVE_UP - 0.1
    s.first.confirm(2, nack=True)
    assert len(s.connection.opening) == 1
    s.now += 0.2
    s.first.confirm(3, nack=True)
    assert len(s.connection.opening) == 2


def test_a_fresh_channel_that_fails_before_taking_over_does_not_end_the_session():
    s = Setup()
    s.publish("a")
    s.now += 5
    s.first.confirm(1, nack=True)
    fresh = FakeChannel()
    s.connection.opening.pop(0)(fresh)  # opened, not yet in confirm mode
    fresh.close()
    assert s.lost == [] and s.publishing.window.channel is s.first
    assert not s.publishing.renewing
