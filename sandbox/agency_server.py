"""One agency's HTTP server: stock waitress on its own port, with its own pool of threads.

Waitress keeps HTTP/1.1 connections alive and answers from a fixed thread pool, as a real
agency's server does.  Each server has its own socket map, so it runs its own I/O loop in
a thread of its own and stops on its own.  Only waitress's public API is used:
``create_server``, the server's ``task_dispatcher``, ``trigger`` and ``map``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from waitress import create_server
from waitress.channel import HTTPChannel

SERVER_HEADER = "satupintu-sandbox"


class AgencyServer:
    """Serves one WSGI app on ``host:port`` (0 = a port the kernel picks) until ``stop()``."""

    def __init__(self, name: str, app: Callable, host: str, port: int, *, threads: int,
                 connection_limit: int) -> None:
        self.name = name
        self.app = app
        self.host = host
        self.port = port
        self.threads = threads
        self.connection_limit = connection_limit
        self._server: Any = None
        self._loop: threading.Thread | None = None

    def start(self) -> int:
        """Bind, start the thread pool and the I/O loop; return the port bound."""
        self._server = create_server(
            self.app,
            map={},  # our own: this server's loop serves only it
            host=self.host,
            port=self.port,
            threads=self.threads,
            connection_limit=self.connection_limit,
            # Workers keep idle connections in their pools for a while.
            channel_timeout=120,
            # select() cannot watch file descriptors above 1024.
            asyncore_use_poll=True,
            # Record headers exactly as they came (X-Forwarded-* included).
            clear_untrusted_proxy_headers=False,
            ident=SERVER_HEADER,
        )
        self.port = int(self._server.effective_port)
        self._loop = threading.Thread(target=self._server.run, name=f"sandbox-{self.name}", daemon=True)
        self._loop.start()
        return self.port

    def begin_stop(self) -> None:
        """Let the pool's idle threads go; busy ones finish their call, then go."""
        if self._server:
            self._server.task_dispatcher.set_thread_count(0)

    def stop(self, deadline: float) -> None:
        """Wait (until ``deadline``, a ``time.monotonic()``) for calls in flight to be
        answered, then close the listener and every connection, and end the I/O loop."""
        server, self._server = self._server, None
        if server is None:
            return
        # The pool first: answers still being written need the I/O loop running.
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=max(0.0, deadline - time.monotonic()))
        # Sockets belong to the loop's thread: close them there, which also ends the loop.
        server.trigger.pull_trigger(lambda: _close_all(server.map))
        if self._loop:
            self._loop.join(max(0.1, deadline - time.monotonic()))
            self._loop = None


def _close_all(socket_map: dict[int, Any]) -> None:
    for dispatcher in list(socket_map.values()):
        if isinstance(dispatcher, HTTPChannel):
            if dispatcher.writable() and not dispatcher.requests:
                dispatcher.handle_write()  # an answer finished just before the stop: send it
            dispatcher.handle_close()  # also wakes a straggling task that waits to write
    for dispatcher in list(socket_map.values()):  # then the listener and the trigger
        try:
            dispatcher.close()
        except OSError:
            pass
    socket_map.clear()
