"""Engine construction: SQLite in WAL mode with immediate write transactions, or PostgreSQL."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import PoolProxiedConnection

log = logging.getLogger("satupintu.store")

# SQLite checkpoints the WAL into the database file itself, inside the COMMIT that takes the
# WAL past 1,000 pages -- while that writer still holds the write lock (ours and SQLite's),
# so every other writer waits the ~6 ms a checkpoint takes.  A background thread does it
# instead (``_Checkpoints``), every CHECKPOINT_EVERY write commits of a process; SQLite's
# own is left on as a safety net, above what that thread lets the WAL reach.  The count is
# per process, the WAL is shared: under ``bench submit`` (~1,150 submissions/s from two
# gateway processes) every 128 commits let the WAL pass SQLite's 10,000 pages between two of
# our checkpoints, so SQLite's own ran inside commits, every writer waiting: p99 60 ms, with
# all 16 clients stalled together every ~0.8 s.  Every 32 or 64: p99 29 ms, the same
# throughput; 64 costs less CPU (``bench.submit_call``: fewer, larger checkpoints copy a page
# written by many commits fewer times).
CHECKPOINT_EVERY = 64
AUTOCHECKPOINT_PAGES = 10_000


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for SQLite the folder is created and WAL mode switched on.

    SQLite write transactions start with ``BEGIN IMMEDIATE`` so that two processes never
    both read and then fail to upgrade to a write lock (SQLITE_BUSY deadlock); reads
    opened with ``execution_options(readonly=True)`` use a plain deferred ``BEGIN``.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return _fork_safe(create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10))
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # LIFO: a writer gets the connection used last, whose page cache is still warm; a
    # connection that another one wrote behind the back of has to read its pages again.
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_use_lifo=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
        cursor.close()

    writers = _WriterQueue(parsed.database) if parsed.database and parsed.database != ":memory:" else None
    if writers is not None:
        _WRITERS[engine] = writers  # for ``driver_transaction``

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("readonly"):
            _begin(conn, "BEGIN")
            return
        if writers is not None:
            writers.acquire()
            conn.info["satupintu_writer"] = True
        try:
            _begin(conn, "BEGIN IMMEDIATE")
        except BaseException:
            # Raised outside SQLAlchemy's statement handling, nothing rolls back (and so nothing
            # releases) a transaction that never began: let the next writer in here.
            if conn.info.pop("satupintu_writer", False):
                writers.release()
            raise

    if writers is not None:
        # These events fire *before* SQLAlchemy ends the transaction: end it here on the
        # driver connection (the driver's own commit/rollback that follows is then a no-op),
        # so the next writer is let in only once this one is really done.
        @event.listens_for(engine, "commit")
        def _on_commit(conn):
            if conn.info.get("satupintu_writer"):
                conn.connection.driver_connection.commit()
                del conn.info["satupintu_writer"]
                checkpoint = writers.committed()
                writers.release()
                if checkpoint:
                    _CHECKPOINTS.request(writers)

        @event.listens_for(engine, "rollback")
        def _on_rollback(conn):
            if conn.info.pop("satupintu_writer", False):
                try:
                    conn.connection.driver_connection.rollback()
                finally:
                    writers.release()

    return _fork_safe(engine)


_WRITERS: weakref.WeakKeyDictionary[Engine, _WriterQueue] = weakref.WeakKeyDictionary()


@contextmanager
def driver_transaction(engine: Engine) -> Iterator[PoolProxiedConnection]:
    """A write transaction on a pooled driver connection, without a SQLAlchemy ``Connection``.

    What ``engine.begin()`` does for a write -- on SQLite the writer queue's lock around
    ``BEGIN IMMEDIATE`` .. ``COMMIT`` (let go if the ``BEGIN`` fails) and the checkpoint count;
    rollback on any error -- done on the driver's connection directly: a ``Connection``, its
    transaction object and the event listeners that end it cost ~40 us per transaction, ten
    times the ``BEGIN`` and ``COMMIT`` themselves.  For group commit's inserts
    (``group_commit.py``), which need nothing else.  The driver's errors come back as
    SQLAlchemy's; a connection that cannot even roll back is invalidated, not pooled again.
    """
    dialect = engine.dialect
    driver_error = dialect.loaded_dbapi.Error
    writers = _WRITERS.get(engine) if dialect.name == "sqlite" else None
    connection = engine.raw_connection()
    try:
        if writers is not None:
            writers.acquire()
        try:
            if dialect.name == "sqlite":  # PostgreSQL's driver begins by itself
                try:
                    connection.driver_connection.execute("BEGIN IMMEDIATE")
                except driver_error as error:
                    raise translate(error, dialect, "BEGIN IMMEDIATE") from error
            try:
                yield connection
                try:
                    connection.commit()
                except driver_error as error:
                    raise translate(error, dialect, "COMMIT") from error
            except BaseException:
                _rollback(connection, driver_error)
                raise
        except BaseException:
            if writers is not None:
                writers.release()
            raise
        if writers is not None:
            checkpoint = writers.committed()
            writers.release()
            if checkpoint:
                _CHECKPOINTS.request(writers)
    finally:
        connection.close()


def _rollback(connection: PoolProxiedConnection, driver_error: type[Exception]) -> None:
    """Roll back what failed; a connection that cannot even do that is not used again."""
    if connection.is_valid:
        try:
            connection.rollback()
        except driver_error as error:
            connection.invalidate(error)


def translate(error: Exception, dialect: Any, statement: str, params: Any = ()) -> BaseException:
    """The driver's ``error`` as SQLAlchemy's (``IntegrityError``, ``OperationalError``, ...)."""
    return exc.DBAPIError.instance(statement, params, error, dialect.loaded_dbapi.Error, dialect=dialect)


def _begin(conn: Connection, statement: str) -> None:
    """``statement`` on the driver's connection itself.

    ``exec_driver_sql`` would take it through a whole execution context, its events and a
    result, on every transaction of every role; errors still come back as SQLAlchemy's
    (``OperationalError`` when the database stays locked), which the tracker's retry catches.
    """
    dialect = conn.dialect
    try:
        conn.connection.driver_connection.execute(statement)
    except dialect.loaded_dbapi.Error as error:
        raise translate(error, dialect, statement) from error


class _WriterQueue:
    """Write transactions on one SQLite file, one at a time, woken in turn rather than polling.

    SQLite lets one writer in and makes the others *poll*: its busy handler sleeps 1, 2, 5,
    ... up to 100 ms between tries, so under contention a writer can wait seconds while
    luckier ones get through (submissions measured at p99 > 1 s with 16 clients).  Queueing
    writers on a ``flock`` of ``<db>.writelock`` wakes the next writer the moment the last
    one commits.  The lock spans exactly the ``BEGIN IMMEDIATE`` .. ``COMMIT`` that SQLite
    serialises anyway, and it is re-entrant per thread, so a nested write waits as before on
    SQLite's busy timeout instead of deadlocking here.

    Each thread locks through a descriptor of its own (``flock`` locks of two open files
    exclude each other in one process as across processes), so waiting and waking happen in
    the kernel with the GIL let go.  A thread lock in front of the ``flock`` (as before)
    woke its next waiter from inside ``release()`` with the GIL held: on 2 busy cores the
    woken thread could preempt the waker, GIL and all (6 % of a gateway worker's GIL time sat
    in that ``release()``; 8-29 % more submissions/s without it, in interleaved runs).  A thread that ends
    closes its descriptor, and with it any lock it still held.
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

    def __del__(self, _close=os.close) -> None:  # when its thread ends (or a forked child replaces it)
        _close(self.fd)


class _Checkpoints:
    """One background thread per process that checkpoints SQLite WALs when asked.

    A passive checkpoint copies committed pages from the WAL into the database file without
    blocking writers, who go on appending meanwhile (https://sqlite.org/wal.html).  Under a
    steady stream of writes it therefore never catches up with the WAL's end, and SQLite
    starts the WAL over only once a checkpoint has caught up: so the bulk is copied first,
    without the write lock, and then the few pages appended meanwhile with it
    (``_WriterQueue``), which lets the next writer start the WAL from the beginning again.
    Each round opens its own short-lived connection (``mode=rw``: a database removed
    meanwhile is not created again), so nothing is held open between checkpoints.
    """

    def __init__(self) -> None:
        self._forked()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """A fresh start (also in a forked child, whose parent's thread and lock state it must not inherit)."""
        self._wanted: set[_WriterQueue] = set()
        self._ready = threading.Condition()
        self._pid = 0

    def request(self, writers: _WriterQueue) -> None:
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
            except (sqlite3.Error, OSError) as exc:  # the next request tries again; SQLite's own is the net
                log.debug("checkpoint of %s failed: %s", writers.database, exc)


def checkpoint(writers: _WriterQueue) -> None:
    """Copy the WAL of ``writers``' database into the file: the bulk unlocked, the rest locked."""
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


def _fork_safe(engine: Engine) -> Engine:
    """Never hand a pooled connection opened in a parent process to a forked child.

    gunicorn builds the app (and checks the schema through the pool) in its master, then
    forks workers: without this, two processes would talk over one socket (on PostgreSQL:
    "prepared statement _pg3_0 already exists", crossed results).  SQLAlchemy's recipe for
    pools across ``fork``: a connection remembers its pid; a child discards it at checkout.
    """
    @event.listens_for(engine, "connect")
    def _remember_pid(_dbapi_connection, record):
        record.info["pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _check_pid(_dbapi_connection, record, proxy):
        if record.info.get("pid") != os.getpid():
            record.dbapi_connection = proxy.dbapi_connection = None
            raise exc.DisconnectionError(
                f"connection opened in pid {record.info.get('pid')}, checked out in pid {os.getpid()}")

    return engine


def default_sqlite_url(folder: str = "var") -> str:
    return f"sqlite:///{os.path.join(folder, 'satupintu.db')}"
