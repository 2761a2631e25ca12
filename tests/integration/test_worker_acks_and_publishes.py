"""On the real RabbitMQ: the confirm window's publishes and the worker's multiple acks (broker/).

``ConfirmWindow`` keeps publishes unconfirmed and settles them as the broker's confirms
arrive, and the worker acks a run of confirmed deliveries with one ``multiple`` ack; here
the broker confirms what it was sent, returns what it cannot route, and keeps exactly the
deliveries left unacked.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pika
import pytest
from support import AMQP_URL

from broker.delivery import AckLedger
from broker.publisher import ConfirmWindow


@pytest.fixture
def queue() -> Iterator[tuple[pika.adapters.blocking_connection.BlockingChannel, str]]:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    name = f"test-worker-acks-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(name)
    yield channel, name
    channel.queue_delete(name)
    connection.close()


def _run(on_channel: Callable[[pika.SelectConnection, object, Callable[[], None]], None]) -> None:
    """Open a SelectConnection and a channel, hand them to ``on_channel`` until it calls ``done``."""
    state: dict[str, object] = {}

    def done() -> None:
        state["done"] = True
        connection.close()

    def on_open(conn) -> None:
        conn.channel(on_open_callback=lambda channel: on_channel(conn, channel, done))

    connection = pika.SelectConnection(pika.URLParameters(AMQP_URL), on_open_callback=on_open,
                                       on_close_callback=lambda *_: connection.ioloop.stop())
    connection.ioloop.call_later(20, connection.ioloop.stop)  # a safety net, not a timing
    connection.ioloop.start()
    assert state.get("done"), "the broker conversation did not finish"


def _drain(channel, name: str) -> list[bytes]:
    bodies = []
    while True:
        method, _props, body = channel.basic_get(name, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)


def test_a_window_of_publishes_is_confirmed_and_arrives_intact(queue):
    blocking, name = queue
    settled: dict[str, list] = {"acked": [], "failed": []}

    def on_channel(_conn, channel, done) -> None:
        def on_settled(acked, failed) -> None:
            settled["acked"] += acked
            settled["failed"] += failed
            if len(settled["acked"]) + len(settled["failed"]) == 4:
                done()

        window = ConfirmWindow(channel, on_settled)

        def ready() -> None:
            for n in range(3):
                window.publish("", name, {"n": n, "text": "ẞ☂" * n}, {"x-attempt": n + 1, "traceparent": "00-a"},
                               f"ok-{n}", message_id=f"m-{n}")
            # No queue by this name: returned (mandatory), so it counts as failed.
            window.publish("", f"{name}-missing", {"n": 9}, None, "lost", message_id="m-9")

        window.start(on_ready=ready)

    _run(on_channel)
    assert sorted(settled["acked"]) == ["ok-0", "ok-1", "ok-2"]
    assert settled["failed"] == ["lost"]
    for n in range(3):
        method, props, body = blocking.basic_get(name, auto_ack=True)
        assert method is not None
        assert body == f'{{"n":{n},"text":"{"ẞ☂" * n}"}}'.encode()
        assert props.headers == {"x-attempt": n + 1, "traceparent": "00-a"}
        assert props.message_id == f"m-{n}"
        assert props.content_type == "application/json"
        assert props.delivery_mode == 2


def _consume_five(name: str, settle: Callable[[AckLedger, list[int]], None]) -> None:
    """Consume the five messages of ``name`` on a SelectConnection, let ``settle`` ack them, close."""

    def on_channel(_conn, channel, done) -> None:
        ledger = AckLedger(channel)
        tags: list[int] = []

        def on_message(_ch, method, _props, _body) -> None:
            ledger.received(method.delivery_tag)
            tags.append(method.delivery_tag)
            if len(tags) == 5:
                settle(ledger, tags)
                # A round trip after the acks, so they reached the broker before we close.
                channel.basic_qos(prefetch_count=10, callback=lambda _frame: done())

        channel.basic_qos(prefetch_count=10,
                          callback=lambda _frame: channel.basic_consume(name, on_message))

    _run(on_channel)


def _fill(blocking, name: str) -> None:
    for n in range(1, 6):
        blocking.basic_publish("", name, f"m{n}".encode())


def test_a_multiple_ack_leaves_the_unconfirmed_delivery_in_the_middle_unacked(queue):
    blocking, name = queue
    _fill(blocking, name)

    def settle(ledger: AckLedger, tags: list[int]) -> None:
        ledger.batching = True
        for tag in (tags[0], tags[1], tags[3], tags[4]):  # the third is still being worked on
            ledger.ready(tag)
        ledger.batching = False
        ledger.flush()

    _consume_five(name, settle)
    assert _drain(blocking, name) == [b"m3"]  # redelivered once the connection closed


def test_a_refused_delivery_is_requeued_and_its_neighbours_acked(queue):
    blocking, name = queue
    _fill(blocking, name)

    def settle(ledger: AckLedger, tags: list[int]) -> None:
        ledger.batching = True
        ledger.refuse(tags[2], requeue=True)  # a publish for it was nacked or returned
        for tag in (tags[0], tags[1], tags[3], tags[4]):
            ledger.ready(tag)
        ledger.batching = False
        ledger.flush()

    _consume_five(name, settle)
    assert _drain(blocking, name) == [b"m3"]
