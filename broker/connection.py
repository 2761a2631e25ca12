"""Opening pika connections: several URLs tried in turn, heartbeats, blocked-connection timeout."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pika
import pika.exceptions

from core.domain.errors import BrokerUnavailable

log = logging.getLogger("satupintu.broker")

# pika exceptions that mean "the connection or channel is gone; reconnect".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
    pika.exceptions.StreamLostError,
    pika.exceptions.ConnectionClosedByBroker,
    pika.exceptions.ChannelClosedByBroker,
    ConnectionError,
    OSError,
)


def parameters(url: str, *, name: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    # Heartbeats keep a half-dead TCP connection from hanging a consumer for hours; the
    # blocked timeout turns a broker's memory alarm into an error instead of a silent stall.
    # SATUPINTU_AMQP_HEARTBEAT overrides the 30 s heartbeat (tests use 2 s to prove that
    # long agency calls never starve it: they run off the connection's thread).
    params.heartbeat = int(os.environ.get("SATUPINTU_AMQP_HEARTBEAT", "30"))
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.client_properties = {"connection_name": name}
    return params


def connect(urls: Sequence[str], *, name: str) -> pika.BlockingConnection:
    """Connect to the first URL that answers (in random order, to spread clients over a cluster)."""
    order = list(urls)
    random.shuffle(order)
    last: BaseException | None = None
    for url in order:
        try:
            return pika.BlockingConnection(parameters(url, name=name))
        except CONNECTION_ERRORS as exc:
            last = exc
    raise BrokerUnavailable(f"no RabbitMQ answers at {', '.join(_safe(u) for u in urls)}: {last!r}") from last


def connect_with_backoff(urls: Sequence[str], *, name: str, stopping=lambda: False,
                         max_delay: float = 10.0) -> pika.BlockingConnection | None:
    """Keep trying to connect, backing off up to ``max_delay``; None if ``stopping()`` turns true."""
    delay = 0.2
    while not stopping():
        try:
            return connect(urls, name=name)
        except BrokerUnavailable as exc:
            log.warning("broker unavailable, retrying in %.1fs: %s", delay, exc)
            end = time.monotonic() + delay
            while time.monotonic() < end and not stopping():
                time.sleep(0.1)
            delay = min(max_delay, delay * 2)
    return None


class AsyncSession:
    """One pika ``SelectConnection``'s life on the calling thread (the relay's, a worker's).

    ``run()`` returns when the connection ends and raises ``BrokerUnavailable`` when it
    ended other than by our own close (``closing`` set first).  Subclasses open their
    channels in ``_on_open`` and give each ``_on_channel_closed`` as its close callback: a
    channel the broker closed ends the whole session, and ``run_sessions`` starts afresh.
    """

    role = "session"

    def __init__(self, url: str):
        self.opened = False  # set by the subclass once it is doing its work
        self.closing = False
        self.error: BaseException | None = None
        self.connection = pika.SelectConnection(
            parameters(url, name=f"satupintu-{self.role}"), on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error, on_close_callback=self._on_close)
        self.ioloop = self.connection.ioloop

    def run(self) -> None:
        try:
            self.ioloop.start()
        finally:
            self._ended()
            try:
                self.ioloop.close()
            except Exception:  # noqa: BLE001 - closing a broken loop may raise anything
                pass
        if self.error is not None:
            raise self.error

    def _ended(self) -> None:
        """The ioloop has stopped (on the session's thread, before ``run()`` returns)."""

    def _on_open(self, connection) -> None:
        raise NotImplementedError

    def _on_open_error(self, _connection, exc: BaseException) -> None:
        self.error = BrokerUnavailable(f"{self.role} could not connect: {exc!r}")
        self.ioloop.stop()

    def _on_close(self, _connection, reason: BaseException) -> None:
        if not self.closing:
            self.error = BrokerUnavailable(f"{self.role} connection closed: {reason!r}")
        self.closing = True
        self.ioloop.stop()

    def _on_channel_closed(self, _channel, reason: BaseException) -> None:
        if not self.closing:
            log.warning("%s channel closed: %r", self.role, reason)
            self.closing = True
            self.error = BrokerUnavailable(f"{self.role} channel closed: {reason!r}")
            if self.connection.is_open:
                self.connection.close()


def run_sessions(urls: Sequence[str], *, role: str, stopping: threading.Event,
                 declare: Callable[[Any], None], session: Callable[[str], Any]) -> None:
    """Run one asynchronous session after another until ``stopping`` is set.

    Each round declares the topology on a short blocking connection (a handful of
    synchronous round trips), then runs ``session(url)`` — an object with ``run()``, which
    returns or raises when its ``SelectConnection`` ends, and ``opened`` — on the next
    URL of a cluster's (in random order, moving on after a failure), backing off from
    0.2 s up to 10 s while the broker stays away.  The relay and the worker run this way.
    """
    delay = 0.2
    order = random.sample(list(urls), len(urls))
    turn = 0
    while not stopping.is_set():
        current = None
        try:
            blocking = connect_with_backoff(urls, name=f"satupintu-{role}-declare", stopping=stopping.is_set)
            if blocking is None:
                break
            try:
                declare(blocking.channel())
            finally:
                blocking.close()
            current = session(order[turn % len(order)])
            current.run()
        except CONNECTION_ERRORS + (BrokerUnavailable,) as exc:
            log.warning("%s lost the broker: %r; reconnecting in %.1fs", role, exc, delay)
            turn += 1
        if current is not None and current.opened:
            delay = 0.2  # it worked for a while: start backing off afresh
        if stopping.wait(delay):
            break
        delay = min(10.0, delay * 2)


def _safe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url
