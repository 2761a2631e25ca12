"""Helpers shared by the tests (imported as ``support``; fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import fcntl
import json
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

__all__ = ["AMQP_URL", "SANDBOX_AGENCIES", "BrokerHandle", "Proc", "RecordingChannel", "Sandbox", "Stack",
           "accept_forever", "address", "edit_yaml", "free_port", "listening_socket", "queue_exists", "sandbox_env_name", "sandbox_first",
           "start_sandbox", "wait_until"]

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
    pass_fds: tuple[int, ...] = ()

    def start(self) -> Proc:
        self.process = subprocess.Popen(self.argv, env=self.env, stdout=self.log.open("ab"),
                                        stderr=subprocess.STDOUT, start_new_session=True, pass_fds=self.pass_fds)
        return self

    def send(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to its process group without waiting."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def wait(self, timeout: float = 15) -> int | None:
        """Wait for it to exit (SIGKILL after ``timeout`` seconds); its exit status."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        self.send(sig)
        return self.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def output(self) -> str:
        """What it has written (stdout and stderr) so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def free_port() -> int:
    """A port nobody listened on a moment ago.  Racy (another process may take it before
    it is bound again): only for programs that cannot bind port 0 and report what they got,
    such as RabbitMQ's nodes (tests/rabbit.py).  Still used by tests/scale, to be moved to
    ``start_sandbox`` and ``listening_socket``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A listening TCP socket on a port the kernel picks, for a server started later
    (``satupintu serve`` takes it as ``SATUPINTU_BIND=fd://N``): held from the start, so no
    other process can take the port in between, and it survives the server's restarts."""
    sock = socket.create_server((host, 0), backlog=1024)
    sock.set_inheritable(True)
    return sock


def address(sock: socket.socket) -> str:
    """``host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


SANDBOX_AGENCIES = ("company-registry", "municipality", "tax-office", "social-security")


def sandbox_env_name(agency: str) -> str:
    """The variable the demo catalog reads an agency's endpoint from."""
    return f"SATUPINTU_SANDBOX_{agency.upper().replace('-', '_')}_URL"


@dataclass
class Sandbox:
    """The real sandbox agencies (``python -m sandbox``) and their control routes."""

    urls: dict[str, str]
    proc: Proc

    def url(self, agency: str, path: str = "") -> str:
        return self.urls[agency] + path

    def stats(self, agency: str) -> dict[str, Any]:
        return requests.get(self.url(agency, "/_sandbox/stats"), timeout=5).json()

    def faults(self, agency: str, **knobs: Any) -> dict[str, Any]:
        """Set knobs of ``agency`` (``POST /_sandbox/faults``); the knobs it has now."""
        response = requests.post(self.url(agency, "/_sandbox/faults"), json=knobs, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()

    knobs = faults  # the name the sandbox's own docs use for them

    def requests(self, agency: str, limit: int = 50) -> list[dict[str, Any]]:
        return requests.get(self.url(agency, f"/_sandbox/requests?limit={limit}"), timeout=5).json()

    recent = requests

    def restore(self) -> None:
        """Every agency back to its start-up knobs."""
        for url in self.urls.values():
            requests.delete(url + "/_sandbox/faults", timeout=5).raise_for_status()

    def clean(self) -> None:
        """Start-up knobs, and stats and request logs emptied."""
        self.restore()
        for url in self.urls.values():
            requests.post(url + "/_sandbox/reset", timeout=5).raise_for_status()

    def stop(self) -> int | None:
        """SIGTERM, and its exit status."""
        return self.proc.stop()

    def stderr(self) -> str:
        """What it wrote besides the ``SANDBOX ...`` lines that report where it listens."""
        return "".join(line for line in self.proc.output().splitlines(keepends=True)
                       if not line.startswith("SANDBOX "))


def sandbox_first(request: Any) -> None:
    """Start the test's sandbox before its catalog is read, when it uses one (a
    ``catalog`` fixture calls this): the catalog reads the agencies' endpoints from the
    URLs the sandbox reported."""
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox")


def start_sandbox(log: Path, *options: str, env: dict[str, str] | None = None,
                  callback_url: str = "", callback_secret: str = "", decision_delay: float = 0.3,
                  faults: str = "{}") -> Sandbox:
    """Run ``python -m sandbox`` with every agency on port 0 and return it once it reported
    the ports it got (``--report-file``); its output goes to ``log``.

    The one way the tests start sandbox agencies: every fixture that needs them calls this."""
    report = log.with_name(log.stem + ".urls.json")
    report.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "sandbox", *(f"--{agency}-port=0" for agency in SANDBOX_AGENCIES),
            f"--report-file={report}", f"--decision-delay={decision_delay}", f"--callback-url={callback_url}",
            f"--callback-secret={callback_secret}", f"--faults={faults}", *options]
    proc = Proc("sandbox", argv, dict(os.environ if env is None else env, PYTHONUNBUFFERED="1"), log).start()

    def reported() -> dict[str, str] | None:
        if proc.process.poll() is not None:
            raise RuntimeError(f"the sandbox exited: {proc.output()[-2000:]}")
        return json.loads(report.read_text()) if report.exists() else None
    return Sandbox(urls=wait_until(reported, 30, message="the sandbox to report its ports"), proc=proc)


@dataclass
class Stack:
    """The roles as real processes (``satupintu serve|relay|tracker|worker``).

    The gateway serves on ``listener``, a socket the stack holds: every ``serve`` started
    (also a restarted one) takes it over as ``SATUPINTU_BIND=fd://N``."""

    env: dict[str, str]
    logs: Path
    listener: socket.socket
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{address(self.listener)}"

    def start(self, role: str, *args: str, name: str | None = None) -> Proc:
        name = name or role
        argv = [sys.executable, "-m", "gateway.cli", role, *args]
        env, fds = self.env, ()
        if role == "serve":
            fd = self.listener.fileno()
            env, fds = dict(env, SATUPINTU_BIND=f"fd://{fd}"), (fd,)
        proc = Proc(name, argv, env, self.logs / f"{name}.log", pass_fds=fds).start()
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
