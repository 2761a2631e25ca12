"""Helpers shared by the tests (imported as ``support``; fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.supervisor import free_port

__all__ = ["AMQP_URL", "BrokerHandle", "RecordingChannel", "accept_forever", "Proc", "Sandbox", "Stack", "edit_yaml", "free_port", "queue_exists", "start_sandbox",
           "wait_until"]

AMQP_URL = os.environ.get("SATUPINTU_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def wait_until(predicate, timeout: float, interval: float = 0.2, message: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``.

    The timeout is a bound on a hang, not an assertion about speed."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {message} (last: {last!r})")


def edit_yaml(path: Path, change) -> None:  # noqa: ANN001
    """Load a catalog file, let ``change(document)`` edit it, write it back."""
    import yaml
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def queue_exists(name: str) -> bool:
    """Whether the local RabbitMQ has queue ``name`` (asked on a connection of its own)."""
    import pika
    import pika.exceptions
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        connection.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()


@dataclass
class BrokerHandle:
    connection: Any
    channel: Any
    names: Any

    def depth(self, queue: str) -> int:
        return self.channel.queue_declare(queue, passive=True).method.message_count


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None

    def start(self) -> Proc:
        self.process = subprocess.Popen(self.argv, env=self.env, stdout=self.log.open("ab"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def send(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to its process group without waiting."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def wait(self, timeout: float = 15) -> None:
        """Wait for it to exit; SIGKILL after ``timeout`` seconds."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        self.send(sig)
        self.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@dataclass
class Sandbox:
    urls: dict[str, str]
    proc: Proc

    def stats(self, agency: str) -> dict[str, Any]:
        return requests.get(self.urls[agency] + "/_sandbox/stats", timeout=5).json()

    def faults(self, agency: str, **knobs: Any) -> dict[str, Any]:
        response = requests.post(self.urls[agency] + "/_sandbox/faults", json=knobs, timeout=5)
        response.raise_for_status()
        return response.json()

    def requests(self, agency: str, limit: int = 50) -> list[dict[str, Any]]:
        return requests.get(self.urls[agency] + f"/_sandbox/requests?limit={limit}", timeout=5).json()


def start_sandbox(urls: dict[str, str], env: dict[str, str], log: Path, *, callback_url: str = "",
                  decision_delay: float = 0.3, faults: str = "{}") -> Sandbox:
    ports = [f"--{agency}-port={url.rsplit(':', 1)[1]}" for agency, url in urls.items()]
    argv = [sys.executable, "-m", "sandbox", *ports, f"--decision-delay={decision_delay}",
            f"--callback-url={callback_url}", f"--callback-secret={env['SATUPINTU_MUNICIPALITY_SECRET']}",
            f"--faults={faults}"]
    proc = Proc("sandbox", argv, dict(os.environ, **env), log).start()
    sandbox = Sandbox(urls=urls, proc=proc)

    def up() -> bool:
        if proc.process.poll() is not None:
            pytest.fail(f"the sandbox exited: {log.read_text()[-2000:]}")
        try:
            return all(requests.get(u + "/_sandbox/stats", timeout=1).ok for u in urls.values())
        except requests.RequestException:
            return False
    wait_until(up, 30, message="the sandbox agencies")
    return sandbox


@dataclass
class Stack:
    """The roles as real processes (``satupintu serve|relay|tracker|worker``)."""

    env: dict[str, str]
    logs: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.env['SATUPINTU_BIND']}"

    def start(self, role: str, *args: str, name: str | None = None) -> Proc:
        name = name or role
        argv = [sys.executable, "-m", "gateway.cli", role, *args]
        proc = Proc(name, argv, self.env, self.logs / f"{name}.log").start()
        self.procs[name] = proc
        return proc

    def stop(self) -> None:
        """Stop every role at once, then wait for them all.

        The gateway gets SIGQUIT, gunicorn's quick stop: on SIGTERM gunicorn 27 keeps each
        idle kept-alive connection (the tests' HTTP sessions leave some) open for two more
        seconds, and every test would wait them out.  The other roles drain on SIGTERM.
        """
        for proc in self.procs.values():
            proc.send(signal.SIGQUIT if proc.argv[3:4] == ["serve"] else signal.SIGTERM)
        for proc in self.procs.values():
            proc.wait()

    def tail(self, lines: int = 30) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


def read_head(conn: socket.socket, data: bytes = b"") -> bytes:
    """Read from ``conn`` until an HTTP head's blank line (or the peer closes); all read so far."""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def writer_lock_free_elsewhere(queue: Any) -> bool:
    """Whether another thread could take the SQLite writer lock of ``queue`` (a
    ``gateway.store.engine._WriterQueue``) right now; it gives it back at once."""
    got = []

    def attempt() -> None:
        holder = queue._holder()
        try:
            fcntl.flock(holder.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            got.append(False)
        else:
            fcntl.flock(holder.fd, fcntl.LOCK_UN)
            got.append(True)

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join(5)
    return got == [True]


def impatient_sqlite_engine(database: Path) -> Any:
    """A store engine on ``database`` (a SQLite file) that gives up waiting for SQLite's write
    lock after 50 ms, with an empty table ``probe (n INTEGER)``."""
    from sqlalchemy import event

    from gateway.store.engine import make_engine
    engine = make_engine(f"sqlite:///{database}")

    @event.listens_for(engine, "connect")
    def _impatient(dbapi_connection, _record):  # noqa: ANN001 -- after make_engine's own 30 s
        dbapi_connection.execute("PRAGMA busy_timeout=50")

    with engine.begin() as conn:  # WAL mode on, before another program takes the lock
        conn.exec_driver_sql("CREATE TABLE probe (n INTEGER)")
    engine.dispose()
    return engine


@contextlib.contextmanager
def sqlite_write_lock_held(database: Path):  # noqa: ANN201
    """Another program holding SQLite's write lock on ``database`` meanwhile."""
    import sqlite3
    blocker = sqlite3.connect(database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        blocker.rollback()
        blocker.close()


def accept_forever(listener: socket.socket, serve: Callable[[socket.socket], None],
                   accepted: Callable[[], None] = lambda: None) -> None:
    """Accept on ``listener`` (until it is closed) in a thread, each connection served by
    ``serve`` on a thread of its own; ``accepted()`` is called for each, before it is served."""
    def loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()


class RecordingChannel:
    """Stands in for pika's channel where only acks and nacks matter (``Tracker._flush``):
    remembers the delivery tags acked and nacked."""

    def __init__(self) -> None:
        self.acks: list[int] = []
        self.nacks: list[int] = []

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.acks.append(tag)

    def basic_nack(self, tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self.nacks.append(tag)
