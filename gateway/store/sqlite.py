"""SQLite only: one writer at a time, woken in turn; WAL checkpoints off the commit path; and
group commit, the inserts of submissions that arrive together in one write transaction.

Statements execute through SQLAlchemy's ``Connection``; the transaction's own ``BEGIN`` and
``COMMIT`` (SQLAlchemy's pysqlite recipe: the driver's implicit transactions are off) go
straight to the DBAPI connection (``Connection.connection.dbapi_connection``), as
SQLAlchemy's ``do_begin``/``do_commit`` do, rather than through ``exec_driver_sql``'s result
machinery: two of a submission's seven executions.  PostgreSQL needs none of it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, Table, event, exc, insert

log = logging.getLogger("satupintu.store")

# SQLite checkpoints the WAL into the database file inside the COMMIT that takes the WAL
# past ``wal_autocheckpoint`` pages, while that writer still holds the write lock, so every
# other writer waits the ~6 ms a checkpoint takes.  A background thread does it instead
# (``_Checkpoints``) every CHECKPOINT_EVERY write commits of a process; SQLite's own stays on
# as a safety net, above what that thread lets the WAL reach (decision in docs/decisions.md:
# every 64 commits kept submission p99 at 29 ms where SQLite's own gave 60 ms).
CHECKPOINT_EVERY = 64
AUTOCHECKPOINT_PAGES = 10_000


def configure(engine: Engine, database: str | None) -> None:
    """PRAGMAs for every connection, and write transactions that begin with ``BEGIN IMMEDIATE``
    (two processes never both read and then fail to upgrade to a write lock), queued on the
    file's writer lock; reads opened with ``execution_options(readonly=True)`` begin deferred."""
    writers = WriterQueue(database) if database and database != ":memory:" else None

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # SQLAlchemy's recipe: we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000", "foreign_keys=ON",
                       f"wal_autocheckpoint={AUTOCHECKPOINT_PAGES}"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("readonly"):
            _driver(conn, "BEGIN")
            return
        if writers is None:
            _driver(conn, "BEGIN IMMEDIATE")
            return
        writers.acquire()
        conn.info["satupintu_writer"] = True
        try:
            _driver(conn, "BEGIN IMMEDIATE")
        except BaseException:
            # Nothing rolls back (and so releases) a transaction that never began.
            conn.info.pop("satupintu_writer", None)
            writers.release()
            raise

    if writers is None:
        return

    # These events fire *before* SQLAlchemy ends the transaction: it is ended here (the
    # driver's commit or rollback that follows then has nothing to do), so that the next
    # writer is let in only once this one is really done.
    @event.listens_for(engine, "commit")
    def _on_commit(conn):
        if conn.info.pop("satupintu_writer", False):
            try:
                _driver(conn, "COMMIT")
            finally:
                checkpoint = writers.committed()
                writers.release()
            if checkpoint:
                _CHECKPOINTS.request(writers)

    @event.listens_for(engine, "rollback")
    def _on_rollback(conn):
        if conn.info.pop("satupintu_writer", False):
            try:
                if not conn.invalidated:
                    conn.exec_driver_sql("ROLLBACK")
            except exc.DBAPIError:  # no transaction left to roll back (a failed COMMIT ended it)
                pass
            finally:
                writers.release()


def _driver(conn: Connection, statement: str) -> None:
    """``BEGIN ...`` or ``COMMIT`` on the DBAPI connection under ``conn``; a driver error leaves
    as SQLAlchemy's (``OperationalError`` ...), as it would from ``exec_driver_sql``, since
    SQLAlchemy does not translate what its events raise."""
    try:
        conn.connection.dbapi_connection.execute(statement).close()
    except sqlite3.Error as error:
        raise exc.DBAPIError.instance(statement, None, error, sqlite3.Error) from error


class WriterQueue:
    """Write transactions on one SQLite file, one at a time, woken in turn rather than polling.

    SQLite lets one writer in and makes the others *poll* (its busy handler sleeps up to
    100 ms between tries), so under contention a writer could wait seconds while luckier ones
    got through.  Queueing writers on a ``flock`` of ``<db>.writelock`` wakes the next writer
    the moment the last one commits.  The lock spans exactly the ``BEGIN IMMEDIATE`` ..
    ``COMMIT`` that SQLite serialises anyway, and is re-entrant per thread.  Each thread locks
    through a descriptor of its own (``flock`` locks of two open files exclude each other in
    one process as across processes); a thread that ends closes it, and any lock it held.
    """

    def __init__(self, database: str):
        self.database = os.path.abspath(database)
        self.path = f"{database}.writelock"
        self._local = threading.local()
        self._commits = 0

    def _holder(self) -> _LockHolder:
        holder = getattr(self._local, "holder", None)
        if holder is None or holder.pid != os.getpid():  # a forked child must not share its parent's lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            holder = self._local.holder = _LockHolder(fd)
        return holder

    def acquire(self) -> None:
        holder = self._holder()
        if holder.depth == 0:
            fcntl.flock(holder.fd, fcntl.LOCK_EX)
        holder.depth += 1

    def release(self) -> None:
        holder = self._local.holder
        holder.depth -= 1
        if holder.depth == 0:
            fcntl.flock(holder.fd, fcntl.LOCK_UN)

    def committed(self) -> bool:
        """Count a write commit (called holding the lock); True when a checkpoint is due."""
        self._commits += 1
        return self._commits % CHECKPOINT_EVERY == 0


class _LockHolder:
    """One thread's descriptor of a ``<db>.writelock`` and how deep in its write it is."""

    def __init__(self, fd: int):
        self.fd, self.pid, self.depth = fd, os.getpid(), 0

    def __del__(self, close=os.close) -> None:  # when its thread ends (or a forked child replaces it)
        close(self.fd)


class _Checkpoints:
    """One background thread per process that checkpoints SQLite WALs when asked.

    A passive checkpoint copies committed pages from the WAL into the database file without
    blocking writers (https://sqlite.org/wal.html), but under a steady stream of writes never
    catches up, and SQLite starts the WAL over only once one has: so the bulk is copied
    without the write lock, then the few pages appended meanwhile with it.
    """

    def __init__(self) -> None:
        self._forked()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """A fresh start (also in a forked child, which must not inherit its parent's state)."""
        self._wanted: set[WriterQueue] = set()
        self._ready = threading.Condition()
        self._pid = 0

    def request(self, writers: WriterQueue) -> None:
        with self._ready:
            if self._pid != os.getpid():  # no thread yet in this process
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="sqlite-checkpoints", daemon=True).start()
            self._wanted.add(writers)
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._wanted:
                    self._ready.wait()
                writers = self._wanted.pop()
            try:
                checkpoint(writers)
            except (sqlite3.Error, OSError) as error:  # the next request tries again; SQLite's own is the net
                log.debug("checkpoint of %s failed: %s", writers.database, error)


def checkpoint(writers: WriterQueue) -> None:
    """Copy the WAL of ``writers``' database into the file: the bulk unlocked, the rest locked.
    A connection of its own (``mode=rw``: a database removed meanwhile is not created again)."""
    connection = sqlite3.connect(f"file:{quote(writers.database)}?mode=rw", uri=True, timeout=30,
                                 isolation_level=None, check_same_thread=False)
    try:
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        writers.acquire()
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            writers.release()
    finally:
        connection.close()


_CHECKPOINTS = _Checkpoints()


# --- group commit -----------------------------------------------------------------------

@dataclass
class Writes:
    """What one submission writes: rows per table, in order (parents before children), and
    ``then``, run in the same transaction afterwards."""

    rows: list[tuple[Table, list[dict[str, Any]]]]
    then: Callable[[Connection], None] | None = None

    def apply(self, conn: Connection) -> None:
        apply_together(conn, [self])


_INSERTS: dict[Table, Any] = {}


def apply_together(conn: Connection, group: list[Writes]) -> None:
    """The rows of every ``Writes`` of ``group``, one ``executemany`` per table, then each ``then``."""
    tables: dict[Table, list[dict[str, Any]]] = {}  # in the order first seen
    for writes in group:
        for table, rows in writes.rows:
            tables.setdefault(table, []).extend(rows)
    for table, rows in tables.items():
        if rows:
            statement = _INSERTS.get(table)
            if statement is None:
                statement = _INSERTS[table] = insert(table)
            conn.execute(statement, rows)
    for writes in group:
        if writes.then is not None:
            writes.then(conn)


@dataclass(eq=False)
class _Ticket:
    """One submission's place in the queue."""

    writes: Writes
    woken: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # woken to lead the next group
    alone: bool = False  # woken because its group failed: write it alone


class GroupCommit:
    """Writes ``Writes`` through one SQLite engine, grouping those that arrive together.

    A write transaction on SQLite costs mostly its lock hand-over and commit, not its
    inserts.  So the first thread to arrive leads and writes everything queued by then in one
    transaction; the others wait for that commit, and whoever arrived meanwhile is handed the
    lead for the next one.  A submission alone writes at once.  If a group's transaction
    fails (an Idempotency-Key used before, which is normal), each of its submissions is
    written again on its own, in its own thread, so that each gets exactly its own outcome.
    """

    def __init__(self, engine: Engine, max_group: int = 64):
        self._engine = weakref.ref(engine)  # kept per engine, which it must not keep alive
        self.max_group = max_group
        self._reset()
        # A forked child (gunicorn forks its workers) starts afresh, before it has threads.
        os.register_at_fork(after_in_child=lambda me=weakref.ref(self): me() is not None and me()._reset())

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[_Ticket] = []
        self._leading = False

    def write(self, writes: Writes) -> None:
        """Write and commit ``writes``; returns once committed, or raises what writing them alone raised."""
        ticket = _Ticket(writes)
        with self._lock:
            self._waiting.append(ticket)
            ticket.lead = not self._leading
            self._leading = True
        if not ticket.lead:
            ticket.woken.wait()
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
        except BaseException as failure:  # noqa: BLE001 -- re-raised below, once the others are woken
            error = failure
        with self._lock:
            if self._waiting:
                successor = self._waiting[0]
                successor.lead = True
                successor.woken.set()
            else:
                self._leading = False
        for other in group:
            if other is not ticket:
                other.alone = error is not None
                other.woken.set()
        if error is not None:
            if len(group) == 1 or not isinstance(error, Exception):
                raise error
            self._transaction([ticket])

    def _transaction(self, group: list[_Ticket]) -> None:
        engine = self._engine()
        if engine is None:
            raise RuntimeError("the engine of this GroupCommit is gone")
        with engine.begin() as conn:
            apply_together(conn, [ticket.writes for ticket in group])


_GROUPS: weakref.WeakKeyDictionary[Engine, GroupCommit] = weakref.WeakKeyDictionary()
_GROUPS_LOCK = threading.Lock()


def group_commit(engine: Engine) -> GroupCommit:
    """The ``GroupCommit`` of ``engine`` in this process."""
    with _GROUPS_LOCK:
        group = _GROUPS.get(engine)
        if group is None:
            group = _GROUPS[engine] = GroupCommit(engine)
    return group

