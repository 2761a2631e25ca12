"""Queue depths read from RabbitMQ by passive declares, cached for a few seconds.

The dashboard polls every 2 s from every open browser and Prometheus scrapes every
gunicorn worker; the cache keeps that from turning into a connection per request.
A passive declare of a queue that does not exist closes the channel, so each queue
gets a fresh channel after a miss.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from broker.connection import CONNECTION_ERRORS, connect
from broker.topology import Names
from core.domain.errors import BrokerUnavailable
from core.model import Catalog
from core.settings import Settings

log = logging.getLogger("satupintu.ops")

CACHE_SECONDS = 3.0


@dataclass(frozen=True)
class QueueDepth:
    name: str
    kind: str  # agency | tracker | dead | retry
    agency: str | None
    messages: int | None  # None: the queue does not exist (yet)
    consumers: int | None

    def document(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "agency": self.agency, "messages": self.messages,
                "consumers": self.consumers}


@dataclass(frozen=True)
class Snapshot:
    ok: bool
    detail: str
    queues: tuple[QueueDepth, ...]
    at: float

    def by_agency(self) -> dict[str, QueueDepth]:
        return {q.agency: q for q in self.queues if q.kind == "agency" and q.agency}

    def named(self, kind: str) -> QueueDepth | None:
        return next((q for q in self.queues if q.kind == kind), None)


_cache: dict[tuple, Snapshot] = {}
_lock = threading.Lock()


def queue_names(names: Names, catalog: Catalog) -> list[tuple[str, str, str | None]]:
    """(queue, kind, agency) for every queue of the namespace."""
    out: list[tuple[str, str, str | None]] = [(names.agency_queue(a), "agency", a) for a in sorted(catalog.agencies)]
    out += [(names.tracker, "tracker", None), (names.dead, "dead", None)]
    delays = sorted({d for a in catalog.agencies.values() for d in a.retry_delays})
    out += [(names.retry(d), "retry", None) for d in delays]
    return out


def snapshot(settings: Settings, catalog: Catalog, *, max_age: float = CACHE_SECONDS) -> Snapshot:
    """Depth and consumers of every queue; ``ok`` False (and no depths) when the broker is away."""
    key = (settings.amqp_urls, settings.namespace, id(catalog))
    with _lock:
        cached = _cache.get(key)
        if cached is not None and time.monotonic() - cached.at < max_age:
            return cached
        fresh = _read(settings, catalog)
        _cache[key] = fresh
        return fresh


def _read(settings: Settings, catalog: Catalog) -> Snapshot:
    wanted = queue_names(Names(settings.namespace), catalog)
    try:
        connection = connect(settings.amqp_urls, name="satupintu-ops")
    except BrokerUnavailable as exc:
        return Snapshot(False, str(exc), tuple(QueueDepth(q, k, a, None, None) for q, k, a in wanted),
                        time.monotonic())
    found = []
    try:
        channel = connection.channel()
        for queue, kind, agency in wanted:
            try:
                method = channel.queue_declare(queue, passive=True).method
                found.append(QueueDepth(queue, kind, agency, method.message_count, method.consumer_count))
            except CONNECTION_ERRORS:
                found.append(QueueDepth(queue, kind, agency, None, None))
                if not connection.is_open:
                    raise
                channel = connection.channel()
        return Snapshot(True, "reachable", tuple(found), time.monotonic())
    except CONNECTION_ERRORS as exc:
        log.warning("could not read queue depths: %r", exc)
        return Snapshot(False, f"lost the broker: {exc!r}", tuple(found), time.monotonic())
    finally:
        try:
            if connection.is_open:
                connection.close()
        except CONNECTION_ERRORS:
            log.debug("closing the ops connection failed", exc_info=True)
