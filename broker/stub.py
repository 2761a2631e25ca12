"""A worker session without a broker, for tests (as Dramatiq's ``StubBroker``).

``StubSession`` offers the worker what ``WorkerSession`` offers (``publish``,
``call_later``, ``hand_back``, ``closing``, ``in_flight``) and lets a test play the broker:
``deliver()`` a dispatch message, ``join()`` until the calls are back and their outcomes
published, read ``published``, ``confirm()`` or ``refuse()`` what waits for a confirm,
``advance()`` the clock of its timers, and read ``acked`` / ``rejected``.  The acks go
through the real ``AckLedger`` and ``Delivery``; only pika is replaced.  ``ScriptedAdapter``
stands in for an agency: it answers each call with what the test gave it.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from adapters.base import Adapter, AgencyRequest, Outcome, OutcomeKind

from .delivery import AckLedger, settle


@dataclass
class Published:
    exchange: str
    routing_key: str
    body: dict[str, Any]
    headers: dict[str, Any] | None
    token: Any  # the delivery it was published for (None: an informational ``sent`` event)


@dataclass
class StubChannel:
    """A consumer channel: remembers acks (tag, multiple), nacks and rejects."""

    is_open: bool = True
    acks: list[tuple[int, bool]] = field(default_factory=list)
    nacks: list[int] = field(default_factory=list)
    rejects: list[int] = field(default_factory=list)

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.acks.append((tag, multiple))

    def basic_nack(self, tag: int, requeue: bool = True) -> None:
        self.nacks.append(tag)

    def basic_reject(self, tag: int, requeue: bool = True) -> None:
        self.rejects.append(tag)


class StubSession:
    """One stub connection with one consumer channel; used from the test's thread."""

    def __init__(self, on_message: Callable[[Any, AckLedger, Any, Any, bytes], None]):
        self.on_message = on_message
        self.closing = False
        self.in_flight = 0
        self.channel = StubChannel()
        self.acks = AckLedger(self.channel)
        self.published: list[Published] = []
        self.unconfirmed: list[Published] = []
        self.now = 0.0  # the timers' clock, moved by ``advance()``
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self._handed_back: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._tags = 0
        self._lock = threading.Lock()

    # --- what the worker uses ------------------------------------------------------------

    def publish(self, exchange: str, routing_key: str, body: dict[str, Any], headers: dict[str, Any] | None,
                *, token: Any) -> None:
        message = Published(exchange, routing_key, body, headers, token)
        self.published.append(message)
        self.unconfirmed.append(message)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.timers.append((self.now + delay, callback))

    def hand_back(self, callback: Callable[[], None]) -> bool:
        if self.closing:
            return False
        self._handed_back.put(callback)
        return True

    # --- what a test does ----------------------------------------------------------------

    def deliver(self, body: dict[str, Any], headers: dict[str, Any] | None = None, *,
                redelivered: bool = False, raw: bytes | None = None) -> int:
        """Hand the worker a message as the agency queue would; returns its delivery tag."""
        with self._lock:
            self._tags += 1
            tag = self._tags
        method = SimpleNamespace(delivery_tag=tag, redelivered=redelivered, routing_key=body.get("agency", ""))
        props = SimpleNamespace(headers=dict(headers or {}))
        self.on_message(self, self.acks, method, props, raw if raw is not None else json.dumps(body).encode())
        return tag

    def join(self, timeout: float = 30.0) -> None:
        """Run the outcomes handed back until no call is in flight (``timeout`` bounds a hang)."""
        deadline = time.monotonic() + timeout
        while self.in_flight:
            try:
                callback = self._handed_back.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{self.in_flight} call(s) still in flight") from None
            callback()

    def confirm(self, count: int | None = None) -> None:
        """The broker confirms the oldest ``count`` publishes waiting (all by default)."""
        self._settle(count, ok=True)

    def refuse(self, count: int | None = None) -> None:
        """The broker refuses (nacks or returns) the oldest ``count`` publishes waiting."""
        self._settle(count, ok=False)

    def advance(self, seconds: float) -> None:
        """Move the clock and run the timers that fall due, in order."""
        self.now += seconds
        while due := sorted((t for t in self.timers if t[0] <= self.now), key=lambda t: t[0]):
            self.timers.remove(due[0])
            due[0][1]()

    @property
    def acked(self) -> list[tuple[int, bool]]:
        return self.channel.acks

    @property
    def rejected(self) -> list[int]:
        return self.channel.rejects

    def _settle(self, count: int | None, *, ok: bool) -> None:
        count = len(self.unconfirmed) if count is None else count
        batch, self.unconfirmed = self.unconfirmed[:count], self.unconfirmed[count:]
        tokens = [message.token for message in batch]
        settle([self.acks], tokens if ok else [], [] if ok else tokens)


class ScriptedAdapter(Adapter):
    """An agency that answers ``answer(kind, request)`` (an ``Outcome``, or raises as an adapter
    may); ``calls`` lists ``(kind, request_id)`` in the order they came."""

    name = "scripted"

    def __init__(self, agency: Any, answer: Callable[[str, AgencyRequest], Outcome | None] | None = None):
        super().__init__(agency)
        self.answer = answer or (lambda _kind, _request: Outcome(kind=OutcomeKind.APPROVED, reference="REF-1"))
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _call(self, kind: str, request: AgencyRequest) -> Any:
        with self._lock:
            self.calls.append((kind, request.request_id))
        return self.answer(kind, request)

    def send(self, request: AgencyRequest) -> Outcome:
        return self._call("send", request)

    def poll(self, request: AgencyRequest) -> Outcome:
        return self._call("poll", request)

    def cancel(self, request: AgencyRequest) -> Outcome:
        return self._call("cancel", request)

    def lookup(self, request: AgencyRequest) -> Outcome | None:
        return self._call("lookup", request)


def stub_worker(*agencies: Any, answer: Callable[[str, AgencyRequest], Outcome | None] | None = None,
                announce_after: float = 1.0, namespace: str = "stub", state_dir: str | None = None):
    """A started ``Worker`` for ``agencies`` (``core.model.Agency``), every one answered by a
    ``ScriptedAdapter`` with ``answer``, and a ``StubSession`` feeding it.  Returns
    ``(worker, session, adapters)``; ``worker.close()`` when done.  The breakers are this
    process's, made afresh; with ``state_dir`` they are written there as a worker's are."""
    from core.model import Catalog
    from core.settings import Settings

    from .worker import Worker
    catalog = Catalog(agencies={a.id: a for a in agencies}, services={}, folder="")
    from .breaker import reset_registry
    reset_registry()  # fresh breakers: closed, no failures counted
    settings = Settings(namespace=namespace, state_dir=state_dir or "")
    adapters = {a.id: ScriptedAdapter(a, answer) for a in agencies}
    worker = Worker(catalog, settings, announce_after=announce_after, adapters=dict(adapters))
    worker.start()
    return worker, StubSession(worker.on_message), adapters
