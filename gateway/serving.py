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

It relies on gthread's ``handle(conn)`` returning whether the connection stays open
(gunicorn >= 27); with an older gunicorn ``worker_class()`` names plain gthread.
"""

from __future__ import annotations

import os
import select
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

DEFAULT_HOLD_MS = 2.0


def hold_seconds(env: dict[str, str] | None = None) -> float:
    """How long a thread waits for the next request on its connection (seconds)."""
    value = (os.environ if env is None else env).get("SATUPINTU_KEEPALIVE_HOLD_MS", "").strip()
    try:
        return max(0.0, float(value)) / 1000 if value else DEFAULT_HOLD_MS / 1000
    except ValueError:
        return DEFAULT_HOLD_MS / 1000


def _supported() -> bool:
    return hasattr(ThreadWorker, "_keepalive_after") and hasattr(ThreadWorker, "finish_request")


class KeepingThreadWorker(ThreadWorker):
    """gthread, whose threads answer a connection's next request without the poller round trip."""

    hold = DEFAULT_HOLD_MS / 1000

    def init_process(self) -> None:
        self.hold = hold_seconds()
        super().init_process()

    def handle(self, conn: Any) -> Any:
        result = super().handle(conn)
        while result is True and self.hold > 0 and self.alive and not conn.is_http2 and self._nobody_waiting():
            if not _buffered(conn) and not _readable(conn.sock, self.hold):
                break  # quiet: back to the poller (finish_request), as plain gthread does
            result = super().handle(conn)
        return result

    def _nobody_waiting(self) -> bool:
        """Whether no other connection waits for a thread: a thread keeps its connection only
        then, so that a few busy connections cannot starve the others."""
        queue = getattr(self.tpool, "_work_queue", None)
        return queue is not None and queue.empty()


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
