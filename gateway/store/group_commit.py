"""Group commit: the inserts of submissions that arrive together, in one write transaction.

A write transaction's cost is mostly not its inserts.  On SQLite the store's write lock is
held from ``BEGIN IMMEDIATE`` to ``COMMIT``, and every driver call inside lets go of the
GIL: getting it back waits for whichever of the process's other threads holds it, up to
the interpreter's switch interval (5 ms) each time -- while every writer of every process
queues behind the lock.  Measured under the bench's 16 clients, the lock was held ~5 ms per
submission for well under 1 ms of work.  On PostgreSQL each commit is a WAL flush.

So a process writes the submissions waiting at one moment together (the leader/follower
scheme databases use for their own group commit): the first thread to arrive leads and
writes everything queued by then -- each table's rows of all of them in one statement --
and commits once; the others wait for that commit.  Whoever arrived meanwhile is handed
the lead for the next transaction, so no thread writes for others more than once.  A
submission alone writes at once, as before: nothing waits for company.

If a group's transaction fails (an Idempotency-Key used before, which is normal, or any
other error) it is rolled back and each of its submissions is written again on its own, in
its own thread, so that each gets exactly its own outcome, as if it had never had company.

The transaction runs on the driver's connection (``engine.driver_transaction``): SQLAlchemy's
``Connection`` around it cost more than the ``BEGIN`` and ``COMMIT``.  Only a group with a
``then`` that needs a ``Connection`` (rare: an application settled at submission) gets one.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from .bulk import BulkInsert
from .engine import driver_transaction, translate

MAX_GROUP = 64  # submissions per transaction at most


@dataclass
class Writes:
    """What one submission writes: rows per table (already ``encode``d for the engine's
    dialect, in the order given); the channels to ``NOTIFY`` at its commit (PostgreSQL only);
    and ``then``, run in the same transaction afterwards."""

    rows: list[tuple[BulkInsert, list[Any]]]
    then: Callable[[Connection], None] | None = None
    notify: tuple[str, ...] = ()


@dataclass(eq=False)
class _Ticket:
    """One submission's place in the queue.

    A ticket that has to wait gets ``woken``, a lock taken at once and released by whoever
    wakes it: the primitive an ``Event`` (its ``Condition``, and a lock per ``wait``) is built
    on, without the layers around it that cost a few us per waiter, with the GIL held, in the
    hand-over where other writers queue.  A ticket that leads at once needs none.
    """

    writes: Writes
    woken: Any = None  # a held ``threading.Lock`` while the ticket waits
    lead: bool = False  # woken to lead the next group
    alone: bool = False  # woken because its group failed: write it alone


class GroupCommit:
    """Writes ``Writes`` through one engine, grouping those that arrive together."""

    def __init__(self, engine: Engine, max_group: int = MAX_GROUP):
        # Weakly: ``group_commit`` keeps one per engine, which must not keep its engine alive.
        self._engine = weakref.ref(engine)
        self.max_group = max_group
        self._reset()
        # A forked child (gunicorn forks its workers) starts afresh, before it has threads.
        os.register_at_fork(after_in_child=lambda me=weakref.ref(self): me() is not None and me()._reset())

    @property
    def engine(self) -> Engine:
        engine = self._engine()
        if engine is None:
            raise RuntimeError("the engine of this GroupCommit is gone")
        return engine

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[_Ticket] = []
        self._leading = False

    def write(self, writes: Writes) -> None:
        """Write and commit ``writes``; returns once they are committed, or raises what
        writing them alone raised."""
        ticket = _Ticket(writes)
        with self._lock:
            self._waiting.append(ticket)
            ticket.lead = not self._leading
            if not ticket.lead:
                ticket.woken = _held_lock()
            self._leading = True
        if not ticket.lead:
            ticket.woken.acquire()  # until ``_lead`` releases it
            if ticket.alone:
                self._transaction([ticket])
            if not ticket.lead:
                return  # written, by its group or alone
        self._lead(ticket)

    def _lead(self, ticket: _Ticket) -> None:
        with self._lock:
            group, self._waiting = self._waiting[:self.max_group], self._waiting[self.max_group:]
        error: BaseException | None = None
        try:
            self._transaction(group)
        except BaseException as exc:  # noqa: BLE001 -- re-raised below, once the others are woken
            error = exc
        with self._lock:
            if self._waiting:
                successor = self._waiting[0]
                successor.lead = True
                successor.woken.release()
            else:
                self._leading = False
        for other in group:
            if other is not ticket:
                other.alone = error is not None
                other.woken.release()
        if error is not None:
            if len(group) == 1 or not isinstance(error, Exception):
                raise error
            self._transaction([ticket])

    def _transaction(self, group: list[_Ticket]) -> None:
        tables: dict[BulkInsert, list[Any]] = {}  # in the order first seen: parents before children
        channels: dict[str, None] = {}
        for ticket in group:
            for table, encoded in ticket.writes.rows:
                tables.setdefault(table, []).extend(encoded)
            channels.update(dict.fromkeys(ticket.writes.notify))
        engine = self.engine
        dialect = engine.dialect
        if all(ticket.writes.then is None for ticket in group):
            with driver_transaction(engine) as connection:
                self._write(dialect, connection, tables, channels)
            return
        with engine.begin() as conn:
            self._write(dialect, conn.connection, tables, channels)
            for ticket in group:
                if ticket.writes.then is not None:
                    ticket.writes.then(conn)

    @staticmethod
    def _write(dialect: Any, connection: Any, tables: dict[BulkInsert, list[Any]], channels: dict[str, None]) -> None:
        for table, encoded in tables.items():
            table.write_driver(dialect, connection, encoded)
        if channels and dialect.name == "postgresql":  # LISTEN/NOTIFY: only PostgreSQL has them
            cursor = connection.cursor()
            try:
                for channel in channels:
                    cursor.execute(f"NOTIFY {channel}")
            except dialect.loaded_dbapi.Error as error:
                raise translate(error, dialect, f"NOTIFY {channel}") from error
            finally:
                cursor.close()


def _held_lock() -> Any:
    """A new lock, already taken: whoever releases it lets the one thread that waits on it go."""
    lock = threading.Lock()
    lock.acquire()
    return lock


_GROUPS: weakref.WeakKeyDictionary[Engine, GroupCommit] = weakref.WeakKeyDictionary()
_GROUPS_LOCK = threading.Lock()


def group_commit(engine: Engine) -> GroupCommit:
    """The ``GroupCommit`` of ``engine`` in this process."""
    group = _GROUPS.get(engine)
    if group is None:
        with _GROUPS_LOCK:
            group = _GROUPS.get(engine)
            if group is None:
                group = _GROUPS[engine] = GroupCommit(engine)
    return group
