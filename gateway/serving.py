"""The gateway's gunicorn worker: gthread, with a thread that keeps a busy connection.

gunicorn's gthread worker hands every kept-alive connection back to its main thread after
each request: the main thread registers the socket with its poller, sets a timer, waits
for it to become readable, unregisters it and submits it to the thread pool again through
a ``Future`` and a done-callback.  Under a steady stream of requests on the same
connections (front offices, load balancers) that round trip was ~40 % of the gateway's CPU
(py-spy, ``bench submit``) -- as much as answering the request.

``KeepingThreadWorker`` lets the thread that answered a request wait a moment
(``SATUPINTU_KEEPALIVE_HOLD_MS``, 2 ms by default, 0 = plain gthread) for the next request
on the same connection and answer it at once, as long as no other connection waits for a
thread; a connection that stays quiet that long, or whose thread is wanted elsewhere, goes
back to the poller, as before.  Everything else is gthread's own: parsing, limits,
timeouts, graceful stops, HTTP/2.

It also spreads connections over the worker processes.  All of them accept on one
listening socket, and the kernel wakes them all; whichever runs first takes the
connection.  Under load that is the process that is busy already: with 16 kept-alive
clients and 2 processes of 8 threads, one process held 13 to 15 of the connections and the
other 1 to 3 (``ss -tnp`` during ``bench submit``), so half the gateway's threads and one
of its two GILs sat idle while connections queued for threads in the other.  A process
that has as many connections as threads now leaves a new one to its siblings for a moment
(``SATUPINTU_ACCEPT_SPREAD_MS``, 10 ms by default, 0 = off; never with one process): it
stops listening for that long, and takes the connection itself if it is still there
afterwards, accepting freely for as long again.  A connection waits at most that long
when every process is full; none is ever refused.

It relies on gthread's ``handle(conn)`` returning whether the connection stays open
(gunicorn >= 27); with an older gunicorn ``worker_class()`` names plain gthread.
"""

from __future__ import annotations

import gc
import os
import select
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

DEFAULT_HOLD_MS = 2.0
DEFAULT_SPREAD_MS = 10.0


def _milliseconds(name: str, default: float, env: dict[str, str] | None) -> float:
    """``name`` from the environment, in milliseconds, as seconds; ``default`` if unset or bad."""
    value = (os.environ if env is None else env).get(name, "").strip()
    try:
        return max(0.0, float(value)) / 1000 if value else default / 1000
    except ValueError:
        return default / 1000


def hold_seconds(env: dict[str, str] | None = None) -> float:
    """How long a thread waits for the next request on its connection (seconds)."""
    return _milliseconds("SATUPINTU_KEEPALIVE_HOLD_MS", DEFAULT_HOLD_MS, env)


def spread_seconds(env: dict[str, str] | None = None) -> float:
    """How long a process with every thread's worth of connections leaves new ones to others."""
    return _milliseconds("SATUPINTU_ACCEPT_SPREAD_MS", DEFAULT_SPREAD_MS, env)


def _supported() -> bool:
    return hasattr(ThreadWorker, "_keepalive_after") and hasattr(ThreadWorker, "finish_request")


class KeepingThreadWorker(ThreadWorker):
    """gthread, whose threads answer a connection's next request without the poller round trip,
    and whose processes share new connections out instead of racing for them."""

    hold = DEFAULT_HOLD_MS / 1000
    spread = 0.0
    _paused_until = 0.0  # not listening until then (monotonic): siblings take new connections
    _free_until = 0.0  # accepting without pausing until then: the siblings had their chance

    def init_process(self) -> None:
        self.hold = hold_seconds()
        self.spread = spread_seconds() if self.cfg.workers > 1 else 0.0
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        # Everything the app built at start-up lives as long as the process: kept out of the
        # collector's reach, a full collection no longer walks it (one took ~50 ms, every
        # request of the process waiting, under ``bench submit``).
        gc.freeze()

    def accept(self, listener: Any) -> None:
        if self.spread and self.nr_conns >= self.cfg.threads:
            now = time.monotonic()
            if now >= self._free_until:
                # Every thread may be taken: leave this connection to a sibling for a moment.
                self._paused_until = now + self.spread
                self._free_until = self._paused_until + self.spread
                super().set_accept_enabled(False)
                return
        super().accept(listener)

    def set_accept_enabled(self, enabled: bool) -> None:
        if enabled and time.monotonic() < self._paused_until:
            return  # gthread's loop asks again on its next turn
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        paused = self._paused_until - time.monotonic()
        if paused > 0 and not self._accepting:
            timeout = min(timeout, paused)  # wake when the pause ends, not at the next 1 s turn
        super().wait_for_and_dispatch_events(timeout)

    def handle(self, conn: Any) -> Any:
        result = super().handle(conn)
        while result is True and self.hold > 0 and self.alive and not conn.is_http2 and self._nobody_waiting():
            if not _buffered(conn) and not _readable(conn.sock, self.hold):
                break  # quiet: back to the poller (finish_request), as plain gthread does
            result = super().handle(conn)
        return result

    def handle_request(self, req: Any, conn: Any) -> Any:
        if conn.is_http2:
            return super().handle_request(req, conn)
        sock = conn.sock
        conn.sock = held = HeadHeldSocket(sock)
        try:
            return super().handle_request(req, conn)
        finally:
            conn.sock = sock
            held.flush()

    def _nobody_waiting(self) -> bool:
        """Whether no other connection waits for a thread: a thread keeps its connection only
        then, so that a few busy connections cannot starve the others."""
        queue = getattr(self.tpool, "_work_queue", None)
        return queue is not None and queue.empty()


class HeadHeldSocket:
    """A connection's socket for one response, whose head goes out with the body.

    gunicorn sends a response's status line and headers in one ``sendall`` and its body in
    the next: two system calls and two TCP segments for every small JSON answer, and for
    the client two reads, often two wake-ups.  Here the head of a response of known length
    waits for the body's first bytes and leaves with them in one ``sendall``.  Any other
    response (streamed, such as server-sent events; an interim 103) is sent as gunicorn
    writes it, every chunk at once.
    Anything else done with the socket (``sendfile``, ``shutdown``, ``close``...) sends a
    held head first, and the worker sends it when the request is done whatever happened
    (a body-less answer: HEAD, 204, 304).
    """

    __slots__ = ("_sock", "_head", "_fresh")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._head: bytes | None = None
        self._fresh = True

    def sendall(self, data: bytes) -> None:
        if self._fresh:
            self._fresh = False
            if b"\r\ncontent-length:" in bytes(data).lower():
                self._head = bytes(data)
                return
        elif self._head is not None:
            data, self._head = self._head + data, None
        self._sock.sendall(data)

    def flush(self) -> None:
        """Send a head still held (OSError if the connection is gone, as a send would)."""
        head, self._head = self._head, None
        if head is not None:
            self._sock.sendall(head)

    def __getattr__(self, name: str) -> Any:
        try:
            self.flush()
        except OSError:
            pass  # the connection is gone: the operation asked for will say so itself
        return getattr(self._sock, name)


def _buffered(conn: Any) -> bool:
    """Whether the next request is read already (gunicorn's buffer, or TLS's)."""
    pending = getattr(conn.sock, "pending", None)
    return bool(conn.parser.unreader.buf.getvalue()) or bool(pending and pending())


def _readable(sock: Any, timeout: float) -> bool:
    try:
        readable, _, _ = select.select([sock], [], [], timeout)
    except (OSError, ValueError):
        return False
    return bool(readable)


def worker_class() -> str:
    """The gunicorn ``worker_class`` of the gateway."""
    return "gateway.serving.KeepingThreadWorker" if _supported() else "gthread"
