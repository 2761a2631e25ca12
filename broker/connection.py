"""Opening pika connections: several URLs tried in turn, heartbeats, blocked-connection timeout.

Every way pika can fail to connect becomes ``BrokerUnavailable`` here, at the edge: not
only ``AMQPConnectionError`` but also the connection workflow's own exceptions
(``AMQPConnectorStackTimeout``, "Timeout during AMQP handshake", and
``AMQPConnectionWorkflowFailed``), which derive from ``Exception`` and escape
``BlockingConnection(...)`` as they are.  So every role retries them with backoff, and
``/readyz`` answers 503 instead of 500.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from core.domain.errors import BrokerUnavailable
from core.settings import Settings

log = logging.getLogger("satupintu.broker")

# The heartbeat when a caller gives none: the settings' default (SATUPINTU_AMQP_HEARTBEAT).
DEFAULT_HEARTBEAT = Settings.amqp_heartbeat

# pika exceptions that mean "the connection or channel is gone (or never came); reconnect".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,  # StreamLostError, ConnectionClosedByBroker, ...
    pika.exceptions.AMQPChannelError,  # ChannelClosedByBroker, ChannelWrongStateError, ...
    AMQPConnectorException,  # the connection workflow: stack and handshake timeouts, workflow failed
    OSError,  # sockets: refused, reset, unreachable
)


def parameters(url: str, *, name: str, heartbeat: int = DEFAULT_HEARTBEAT) -> pika.URLParameters:
    """pika's parameters for ``url``: heartbeats keep a half-dead TCP connection from hanging a
    consumer for hours; the blocked timeout turns a broker's memory alarm into an error
    instead of a silent stall.  Options in the URL's query (``?stack_timeout=5``) stay."""
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.client_properties = {"connection_name": name}
    return params


def connect(urls: Sequence[str], *, name: str, heartbeat: int = DEFAULT_HEARTBEAT) -> pika.BlockingConnection:
    """Connect to the first URL that answers (in random order, to spread clients over a cluster);
    ``BrokerUnavailable`` when none does, for whatever reason."""
    order = random.sample(list(urls), len(urls))
    last: BaseException | None = None
    for url in order:
        try:
            return pika.BlockingConnection(parameters(url, name=name, heartbeat=heartbeat))
        except CONNECTION_ERRORS as exc:
            last = exc
    raise BrokerUnavailable(f"no RabbitMQ answers at {', '.join(_safe(u) for u in urls)}: {last!r}") from last


def connect_with_backoff(urls: Sequence[str], *, name: str, stopping: Callable[[], bool] = lambda: False,
                         heartbeat: int = DEFAULT_HEARTBEAT, max_delay: float = 10.0) -> pika.BlockingConnection | None:
    """Keep trying to connect, backing off up to ``max_delay``; None if ``stopping()`` turns true."""
    delay = 0.2
    while not stopping():
        try:
            return connect(urls, name=name, heartbeat=heartbeat)
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

    def __init__(self, url: str, *, heartbeat: int = DEFAULT_HEARTBEAT):
        self.opened = False  # set by the subclass once it is doing its work
        self.closing = False
        self.error: BaseException | None = None
        self.connection = pika.SelectConnection(
            parameters(url, name=f"satupintu-{self.role}", heartbeat=heartbeat), on_open_callback=self._on_open,
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
                 declare: Callable[[Any], None], session: Callable[[str], Any],
                 heartbeat: int = DEFAULT_HEARTBEAT) -> None:
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
            blocking = connect_with_backoff(urls, name=f"satupintu-{role}-declare", stopping=stopping.is_set,
                                            heartbeat=heartbeat)
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
