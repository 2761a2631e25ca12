"""The relay: claims outbox rows and publishes them with publisher confirms.

A row is marked sent only after the broker confirmed it, so a crash between publishing
and marking can only publish a row twice (the request id makes that harmless), never
lose it.  Claims are leases: rows claimed by a relay that died come back after the lease.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from sqlalchemy import Engine

from broker.connection import CONNECTION_ERRORS, connect_with_backoff
from broker.publisher import Publisher
from broker.topology import Names, declare_for

from .catalog import Catalog
from .domain.errors import BrokerUnavailable, PublishNotConfirmed
from .logs import correlation
from .store import records

log = logging.getLogger("satupintu.relay")


class Relay:
    def __init__(self, engine: Engine, catalog: Catalog, *, amqp_urls: tuple[str, ...], namespace: str,
                 batch: int = 200, lease: float = 30.0, idle_wait: float = 0.05):
        self.engine = engine
        self.catalog = catalog
        self.urls = amqp_urls
        self.names = Names(namespace)
        self.batch = batch
        self.lease = dt.timedelta(seconds=lease)
        self.idle_wait = idle_wait
        self.stopping = threading.Event()
        self.published = 0

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        while not self.stopping.is_set():
            connection = connect_with_backoff(self.urls, name="satupintu-relay", stopping=self.stopping.is_set)
            if connection is None:
                return
            try:
                channel = connection.channel()
                declare_for(channel, self.names, self.catalog.agencies.values())
                publisher = Publisher(channel)
                while not self.stopping.is_set():
                    if self.relay_once(publisher) == 0:
                        # Sleeping on the connection keeps heartbeats flowing.
                        connection.sleep(self.idle_wait)
            except CONNECTION_ERRORS + (BrokerUnavailable,) as exc:
                log.warning("relay lost the broker: %r; reconnecting", exc)
            finally:
                try:
                    if connection.is_open:
                        connection.close()
                except Exception:  # noqa: BLE001
                    pass

    def relay_once(self, publisher: Publisher) -> int:
        """Publish one batch; returns how many rows were confirmed and marked sent."""
        reclaimed: set[int] = set()
        with self.engine.begin() as conn:
            rows = records.claim_outbox(conn, limit=self.batch, lease=self.lease, reclaimed=reclaimed)
        if not rows:
            return 0
        sent: list[int] = []
        try:
            for row in rows:
                headers = row.headers
                if row.id in reclaimed:
                    # A relay that died may have published this row already: the worker looks
                    # the request up at the agency before filing it.
                    headers = dict(headers or {}, **{"x-maybe-sent": True})
                try:
                    publisher.publish(self.names.exchange(row.exchange), row.routing_key, row.body, headers)
                except PublishNotConfirmed as exc:
                    # Unroutable or refused: leave it unsent; the lease brings it back later.
                    log.error("outbox row %s not confirmed: %s", row.id, exc,
                              extra=correlation(row.body, row.headers))
                    continue
                sent.append(row.id)
        finally:
            if sent:
                with self.engine.begin() as conn:
                    records.mark_sent(conn, sent)
                self.published += len(sent)
        return len(sent)

