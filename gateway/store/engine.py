"""Engine construction: SQLite in WAL mode with queued write transactions (``sqlite.py``), or
PostgreSQL; both safe to use across gunicorn's fork."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url

from . import sqlite


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for SQLite the folder is created and WAL mode switched on."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return _fork_safe(create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10))
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # LIFO: a writer gets the connection used last, whose page cache is still warm; a
    # connection that another one wrote behind the back of has to read its pages again.
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_use_lifo=True)
    sqlite.configure(engine, parsed.database)
    return _fork_safe(engine)


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
