"""A worker's delivery session: one broker connection, its channels, confirms and acks.

``WorkerSession`` is one pika ``SelectConnection``'s life on the worker's thread.  One
channel per agency queue consumes, with a prefetch a little above the agency's
concurrency (``limits.prefetch``); one channel publishes, in confirm mode
(``PublishingChannel``), so outcomes are published without waiting and each delivery is
acked once everything published for it is confirmed (``broker.delivery``).  Agency calls
run on other threads and hand their outcome back with ``hand_back()``.
``broker.stub.StubSession`` offers the same to the worker without a broker, for tests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from core import metrics

from . import messages
from .connection import DEFAULT_HEARTBEAT, AsyncSession
from .delivery import AckLedger, settle
from .publisher import ConfirmWindow

log = logging.getLogger("satupintu.worker")

# What is published again goes out on a fresh channel: after a node of a cluster was lost,
# a channel opened during the fail-over kept refusing (nacking) every publish to a queue
# for minutes, while a fresh one on the same connection was confirmed at once (measured
# with tests/scale/test_rabbitmq_cluster.py on RabbitMQ 3.10).  A refusal therefore
# replaces the publishing channel, at most once per this many seconds.
RENEW_AFTER = 1.0
RENEW_GIVE_UP = 10.0  # a fresh channel not in confirm mode by then is asked for again
STOP_GRACE = 30.0  # seconds ``stop()`` lets the calls in flight finish and be acked

OnMessage = Callable[[Any, AckLedger, Any, Any, bytes], None]


class PublishingChannel:
    """A connection's publishing side: a ``ConfirmWindow`` on one channel, replaced by a fresh
    channel when the broker refuses a publish (``RENEW_AFTER``).  What waited for a confirm
    on the replaced channel counts as refused, so its deliveries publish it again."""

    def __init__(self, connection: Any, *, on_settled: Callable[[list[Any], list[Any]], None],
                 on_lost: Callable[[Any, BaseException], None], clock: Callable[[], float] = time.monotonic):
        self.connection = connection
        self.on_settled = on_settled
        self.on_lost = on_lost  # the current channel closed: the session ends
        self.clock = clock
        self.window: ConfirmWindow | None = None
        self.since = 0.0  # when the current channel took over
        self.renewing = False
        self.renew_started = 0.0
        self.retired: list[Any] = []  # replaced channels being closed
        self.closing = False

    @property
    def in_flight(self) -> int:
        return self.window.in_flight if self.window is not None else 0

    def open(self, on_ready: Callable[[], None]) -> None:
        """Open the first channel; ``on_ready()`` once it is in confirm mode."""
        self.connection.channel(on_open_callback=lambda channel: self._start(channel, on_ready))

    def publish(self, exchange: str, routing_key: str, body: dict[str, Any], headers: dict[str, Any] | None,
                token: Any) -> None:
        assert self.window is not None
        message_id = body.get("message_id") or body.get("event_id") or messages.new_id()
        self.window.publish(exchange, routing_key, body, headers, token, message_id=message_id)

    def _start(self, channel: Any, on_ready: Callable[[], None]) -> None:
        channel.add_on_close_callback(self._on_closed)
        window = ConfirmWindow(channel, self._on_confirms)
        if self.window is None:
            self.window, self.since = window, self.clock()
            window.start(on_ready=on_ready)
        else:
            window.start(on_ready=lambda: self._take_over(window))

    def _on_confirms(self, acked: list[Any], failed: list[Any]) -> None:
        self.on_settled(acked, failed)
        if failed:
            self.renew()

    def renew(self) -> None:
        """Open a fresh channel that takes over once in confirm mode: one at a time, and not
        within ``RENEW_AFTER`` of the last (a burst of refusals replaces the channel once)."""
        now = self.clock()
        if self.closing or now - self.since < RENEW_AFTER:
            return
        if self.renewing and now - self.renew_started < RENEW_GIVE_UP:
            return  # one on its way (a broker that never answers it is asked again later)
        self.renewing, self.renew_started = True, now
        log.warning("the broker refused messages on the worker's publishing channel; opening a fresh one")
        try:
            self.connection.channel(on_open_callback=lambda channel: self._start(channel, lambda: None))
        except Exception as exc:  # noqa: BLE001 - the connection is going: the session ends anyway
            self.renewing = False
            log.warning("could not open a fresh publishing channel: %r", exc)

    def _take_over(self, window: ConfirmWindow) -> None:
        old, self.window = self.window, window
        self.since, self.renewing = self.clock(), False
        metrics.CHANNEL_RENEWALS.inc()
        assert old is not None
        self.retired.append(old.channel)
        self.on_settled([], old.forget_pending())
        if old.channel.is_open:
            old.channel.close()

    def _on_closed(self, channel: Any, reason: BaseException) -> None:
        if channel in self.retired:
            self.retired.remove(channel)  # closed by ``_take_over``: the session goes on
        elif self.window is not None and channel is not self.window.channel:
            self.renewing = False  # the fresh one failed before taking over: try again later
        else:
            self.on_lost(channel, reason)


class WorkerSession(AsyncSession):
    """One broker connection of a worker: consume the agencies' queues, publish with confirms,
    ack on confirm; on ``stopping``, stop consuming, let the calls in flight finish and be
    acked (``STOP_GRACE`` at most), then close."""

    role = "worker"

    def __init__(self, url: str, *, queues: dict[str, int], on_message: OnMessage, stopping: threading.Event,
                 on_consuming: Callable[[], None] = lambda: None, heartbeat: int = DEFAULT_HEARTBEAT):
        self.queues = queues  # queue name -> prefetch
        self.on_message = on_message
        self.stopping = stopping
        self.on_consuming = on_consuming
        self.in_flight = 0  # agency calls started from this connection's deliveries
        self.ledgers: list[AckLedger] = []
        self.consumers: list[tuple[Any, str]] = []
        self.stop_deadline: float | None = None
        self.over = False
        super().__init__(url, heartbeat=heartbeat)
        self.publishing = PublishingChannel(self.connection, on_settled=self._on_settled,
                                            on_lost=self._on_channel_closed)

    # --- what the worker uses ------------------------------------------------------------

    def publish(self, exchange: str, routing_key: str, body: dict[str, Any], headers: dict[str, Any] | None,
                *, token: Any) -> None:
        self.publishing.publish(exchange, routing_key, body, headers, token)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        return self.ioloop.call_later(delay, callback)

    def hand_back(self, callback: Callable[[], None]) -> bool:
        """Run ``callback`` on the ioloop (from any thread); False when this session is over.
        A callback that never runs (the loop ended first) leaves its delivery unacked, so the
        broker hands it out again."""
        if self.over:
            return False
        try:
            self.ioloop.add_callback_threadsafe(callback)
        except Exception:  # noqa: BLE001 - the loop is closing
            return False
        return True

    # --- the connection's life -----------------------------------------------------------

    def _ended(self) -> None:
        self.over = True
        self.publishing.closing = True

    def _on_open(self, connection) -> None:
        self.publishing.open(on_ready=self._open_consumers)

    def _open_consumers(self) -> None:
        for queue, prefetch in self.queues.items():
            self.connection.channel(on_open_callback=lambda ch, q=queue, n=prefetch: self._consume(ch, q, n))
        self.ioloop.call_later(0.2, self._watch)

    def _consume(self, channel, queue: str, prefetch: int) -> None:
        channel.add_on_close_callback(self._on_channel_closed)
        acks = AckLedger(channel)
        self.ledgers.append(acks)

        def consume(_frame) -> None:
            tag = channel.basic_consume(queue, lambda _ch, method, props, body: self.on_message(
                self, acks, method, props, body))
            self.consumers.append((channel, tag))
            if len(self.consumers) == len(self.queues):
                self.opened = True
                self.on_consuming()
                log.info("worker consuming %s", ", ".join(self.queues))

        channel.basic_qos(prefetch_count=prefetch, callback=consume)

    def _on_settled(self, acked: list[Any], failed: list[Any]) -> None:
        settle(self.ledgers, acked, failed)

    def _on_channel_closed(self, channel, reason: BaseException) -> None:
        self.publishing.closing = True
        super()._on_channel_closed(channel, reason)

    def _watch(self) -> None:
        """Every 0.2 s: on ``stopping``, cancel the consumers, wait for the calls in flight
        and their confirms, then close."""
        if self.closing:
            return
        if not self.stopping.is_set():
            self.ioloop.call_later(0.2, self._watch)
            return
        if self.stop_deadline is None:
            self.stop_deadline = time.monotonic() + STOP_GRACE
            for channel, tag in self.consumers:
                if channel.is_open:
                    channel.basic_cancel(tag)
        if (self.in_flight or self.publishing.in_flight) and time.monotonic() < self.stop_deadline:
            self.ioloop.call_later(0.05, self._watch)
            return
        self.closing = True
        self.publishing.closing = True
        if self.connection.is_open:
            self.connection.close()
