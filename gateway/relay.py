"""The relay: claims outbox rows and publishes them with publisher confirms.

A row is marked sent only after the broker confirmed it, so a crash between publishing
and marking can only publish a row twice (the request id makes that harmless), never
lose it.  Claims are leases: rows claimed by a relay that died come back after the lease;
rows a living relay published on a connection that was lost come back at once.

Confirms are asynchronous (``broker.publisher.ConfirmWindow``): the relay keeps up to
``window`` publishes unconfirmed, and each store transaction both marks the rows confirmed
since the last one as sent and claims the next batch.  Everything runs on the pika
``SelectConnection``'s ioloop, one thread, so heartbeats flow between batches.  When the
outbox is empty the relay looks again every ``idle_wait`` seconds with a read-only probe
(on SQLite that takes no write lock), or, on PostgreSQL, as soon as a ``NOTIFY`` on
``satupintu_outbox`` says a row was written.
"""

from __future__ import annotations

import datetime as dt
import logging
import select
import threading
import time
from typing import Any

from sqlalchemy import Engine, bindparam, or_, update
from sqlalchemy import select as sql_select

from broker.connection import DEFAULT_HEARTBEAT, AsyncSession, run_sessions
from broker.publisher import ConfirmWindow
from broker.topology import Names, declare_for
from core.domain.errors import BrokerUnavailable
from core.logs import correlation
from core.model import Catalog

from .store import records
from .store import tables as t

log = logging.getLogger("satupintu.relay")


# Built once: the idle relay asks this 50 times a second, and building the statement cost
# more than running it.
_CLAIMABLE = (sql_select(t.outbox.c.id)
              .where(t.outbox.c.sent_at.is_(None),
                     or_(t.outbox.c.claimed_until.is_(None), t.outbox.c.claimed_until < bindparam("now")))
              .limit(1))


class Relay:
    def __init__(self, engine: Engine, catalog: Catalog, *, amqp_urls: tuple[str, ...], namespace: str,
                 batch: int = 500, window: int = 1000, lease: float = 30.0, idle_wait: float = 0.02,
                 heartbeat: int = DEFAULT_HEARTBEAT):
        self.engine = engine
        self.heartbeat = heartbeat
        self.catalog = catalog
        self.urls = amqp_urls
        self.names = Names(namespace)
        self.batch = batch
        self.window = max(window, batch)
        self.lease = dt.timedelta(seconds=lease)
        self.idle_wait = idle_wait
        self.stopping = threading.Event()
        self.published = 0
        self._listener = _Listener(engine) if engine.dialect.name == "postgresql" else None

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        run_sessions(self.urls, role="relay", stopping=self.stopping,
                     declare=lambda channel: declare_for(channel, self.names, self.catalog.agencies.values()),
                     session=lambda url: _Session(self, url), heartbeat=self.heartbeat)
        if self._listener:
            self._listener.close()

    # --- store side (called on the ioloop thread) ------------------------------------

    def claimable(self) -> bool:
        """A read-only look: is there an unsent row whose claim is free or expired?"""
        with self.engine.connect().execution_options(readonly=True) as conn:
            return conn.execute(_CLAIMABLE, {"now": records.now()}).first() is not None

    def release(self, ids: list[int], *, maybe_sent: bool = False) -> None:
        """Give up the claim on unsent rows, so the next session takes them at once: rows the
        broker refused or never took (claim cleared), or, ``maybe_sent``, rows whose confirm
        can no longer come (claim expired: ``claim_outbox`` flags them ``x-maybe-sent``)."""
        with self.engine.begin() as conn:
            conn.execute(update(t.outbox).where(t.outbox.c.id.in_(ids), t.outbox.c.sent_at.is_(None))
                         .values(claimed_until=records.now() if maybe_sent else None))

    def mark_and_claim(self, confirmed: list[int], limit: int, reclaimed: set[int]) -> list[Any]:
        """One transaction: mark ``confirmed`` rows sent and claim up to ``limit`` more."""
        with self.engine.begin() as conn:
            records.mark_sent(conn, confirmed)
            if limit <= 0:
                return []
            return records.claim_outbox(conn, limit=limit, lease=self.lease, reclaimed=reclaimed)


class _Session(AsyncSession):
    """One broker connection's life: publish, settle confirms, mark sent, until stop or loss."""

    role = "relay"

    def __init__(self, relay: Relay, url: str):
        self.relay = relay
        self.window: ConfirmWindow | None = None
        self.confirmed: list[int] = []
        self.timer = None
        self.timer_at = 0.0
        self.deadline: float | None = None  # when stopping: how long to wait for confirms
        super().__init__(url, heartbeat=relay.heartbeat)

    # --- connection lifecycle --------------------------------------------------------

    def _ended(self) -> None:
        """The connection is gone: mark what was confirmed, and give the rows still waiting
        for a confirm back at once -- the next session publishes them again (flagged
        ``x-maybe-sent``) instead of waiting out their lease.  Should the store fail here,
        the lease still brings them back."""
        pending = [row.id for row in self.window.forget_pending() if row is not None] if self.window else []
        try:
            if self.confirmed:
                self.relay.mark_and_claim(self.confirmed, 0, set())
                self.relay.published += len(self.confirmed)
                self.confirmed = []
            if pending:
                self.relay.release(pending, maybe_sent=True)
                log.warning("%d outbox row(s) unconfirmed when the broker connection ended: published again",
                            len(pending))
        except Exception:  # noqa: BLE001
            log.exception("could not give back the unconfirmed outbox rows (their lease brings them back)")

    def _on_open(self, connection) -> None:
        self.opened = True
        connection.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel) -> None:
        channel.add_on_close_callback(self._on_channel_closed)
        self.window = ConfirmWindow(channel, self._on_settled)
        self.window.start(on_ready=lambda: self._wake(0))
        listener = self.relay._listener
        if listener and listener.fileno() is not None:
            self.ioloop.add_handler(listener.fileno(), self._on_notify, self.ioloop.READ)

    # --- the cycle -------------------------------------------------------------------

    def _wake(self, delay: float) -> None:
        """Run ``_cycle`` after ``delay`` seconds, or sooner if already due sooner."""
        due = time.monotonic() + delay
        if self.timer is not None:
            if self.timer_at <= due:
                return
            self.ioloop.remove_timeout(self.timer)
        self.timer, self.timer_at = self.ioloop.call_later(delay, self._cycle), due

    def _on_notify(self, fd, _events) -> None:
        listener = self.relay._listener
        listener.drain()
        if listener.fileno() is None:
            self.ioloop.remove_handler(fd)
        self._wake(0)

    def _on_settled(self, acked: list[Any], failed: list[Any]) -> None:
        self.confirmed.extend(row.id for row in acked)
        for row in failed:
            log.error("outbox row %s not confirmed (nack or no queue for %s / %s)", row.id, row.exchange,
                      row.routing_key, extra=correlation(row.body, row.headers))
        if failed:
            # A nack says the broker could not take the message: after a node of a cluster
            # was lost, a channel can keep refusing a queue whose leader moved.  Release the
            # rows at once (no need to wait out the lease) -- also those refused after the
            # first, while this session closes -- and start over on a fresh connection,
            # which the run loop may open to another node.
            self._give_back([row.id for row in failed])
            if not self.closing:
                self.closing = True
                self.error = BrokerUnavailable(f"broker refused {len(failed)} message(s)")
                if self.connection.is_open:
                    self.connection.close()  # what was confirmed is marked as the session ends (``_ended``)
            return
        self._wake(0)

    def _cycle(self) -> None:
        self.timer = None
        relay, window = self.relay, self.window
        assert window is not None
        if self.closing or not window.channel.is_open:
            return  # the session is ending (``_ended`` gives back what waits for a confirm): claim nothing
        stopping = relay.stopping.is_set()
        room = 0 if stopping else relay.window - window.in_flight
        limit = relay.batch if room >= relay.batch else 0
        if limit and not self.confirmed and not relay.claimable():
            limit = 0
        rows: list[Any] = []
        reclaimed: set[int] = set()
        if self.confirmed or limit:
            confirmed, self.confirmed = self.confirmed, []
            try:
                rows = relay.mark_and_claim(confirmed, limit, reclaimed)
            except Exception:
                self.confirmed = confirmed + self.confirmed  # try the marks again next cycle
                log.exception("relay store transaction failed")
                self._wake(1.0)
                return
            relay.published += len(confirmed)
        exchange = relay.names.exchange
        # pika buffers the batch's frames and writes them when the socket is writable.
        for i, row in enumerate(rows):
            headers = row.headers
            if row.id in reclaimed:
                # A relay that died may have published this row already: the worker looks
                # the request up at the agency before filing it.
                headers = dict(headers or {}, **{"x-maybe-sent": True})
            body = row.body
            message_id = body.get("message_id") or body.get("event_id") or f"outbox-{row.id}"
            try:
                window.publish(exchange(row.exchange), row.routing_key, body, headers, row,
                               message_id=message_id)
            except Exception:
                # The channel went between the claim and the publish: the rows not yet
                # handed to it were never sent, so they go back at once, not after the lease.
                self._give_back([r.id for r in rows[i:]])
                raise
        if stopping:
            self._finish()
        elif len(rows) == relay.batch:
            self._wake(0)  # more is waiting
        else:
            self._wake(relay.idle_wait)

    def _give_back(self, ids: list[int]) -> None:
        try:
            self.relay.release(ids)
        except Exception:  # noqa: BLE001 - the lease brings them back anyway
            log.exception("could not give back %d claimed outbox row(s)", len(ids))

    def _finish(self) -> None:
        """Stopping: wait (a little) for the confirms in flight, mark them, then close."""
        if self.deadline is None:
            self.deadline = time.monotonic() + 5
        if self.window is not None and self.window.in_flight and time.monotonic() < self.deadline:
            self._wake(0.05)
            return
        self.closing = True
        if self.connection.is_open:
            self.connection.close()


class _Listener:
    """``LISTEN satupintu_outbox`` on a PostgreSQL connection of its own, for the relay's ioloop."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.conn = None
        try:
            import psycopg
            url = engine.url.set(drivername="postgresql")
            self.conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
            self.conn.execute(f"LISTEN {records.OUTBOX_CHANNEL}")
        except Exception as exc:  # noqa: BLE001 - polling still works without it
            log.warning("no LISTEN/NOTIFY wake-up (polling instead): %r", exc)
            self.conn = None

    def fileno(self) -> int | None:
        return self.conn.fileno() if self.conn is not None else None

    def drain(self) -> None:
        """Consume the notifications waiting on the socket; their content does not matter."""
        if self.conn is None:
            return
        try:
            ready, _, _ = select.select([self.conn.fileno()], [], [], 0)
            if ready:
                for _ in self.conn.notifies(timeout=0):
                    pass
        except Exception as exc:  # noqa: BLE001
            log.warning("LISTEN connection failed (polling instead): %r", exc)
            self.close()

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass
            self.conn = None
