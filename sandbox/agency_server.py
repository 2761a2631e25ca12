"""One agency's HTTP server: waitress on its own port, with its own pool of threads.

Waitress keeps HTTP/1.1 connections alive and answers from a fixed thread pool, as a real
agency's server does; werkzeug's development server closed every connection and started a
thread for each, which cost the sandbox much of its CPU under load. Each server has its own
socket map, so it runs its own I/O loop in a thread of its own and stops on its own.
"""

from __future__ import annotations

import socket
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server

SERVER_HEADER = "satupintu-sandbox"
SEND_BYTES = 18000  # waitress's default before 1.3
# Deprecated since waitress 1.3 but still honoured; if a later waitress drops it, its own
# default (the same bytes, at more CPU per call) is used rather than failing to start.
_TUNING = {"send_bytes": SEND_BYTES} if any(name == "send_bytes" for name, _ in Adjustments._params) else {}


class AgencyServer:
    """Serves one WSGI app on ``host:port`` (0 = any free port) until ``stop()``."""

    def __init__(
        self,
        name: str,
        app: Callable,
        host: str,
        port: int,
        *,
        threads: int,
        connection_limit: int,
    ) -> None:
        self.name = name
        self.app = app
        self.host = host
        self.port = port
        self.threads = threads
        self.connection_limit = connection_limit
        self._server: BaseWSGIServer | None = None
        self._socket_map: dict[int, Any] = {}
        self._loop: threading.Thread | None = None

    def start(self) -> int:
        """Bind, start the thread pool and the I/O loop; return the port bound."""
        listener = bind(self.host, self.port)
        try:
            with warnings.catch_warnings():
                # send_bytes: see below; waitress has deprecated it since 1.3 but kept it.
                warnings.simplefilter("ignore", DeprecationWarning)
                self._server = self._create(listener)
        except BaseException:
            listener.close()
            raise
        self.port = int(self._server.effective_port)
        self._loop = threading.Thread(
            target=self._server.run, name=f"sandbox-{self.name}", daemon=True
        )
        self._loop.start()
        return self.port

    def _create(self, listener: socket.socket) -> BaseWSGIServer:
        return create_server(
            self.app,
            map=self._socket_map,  # our own: this server's loop serves only it
            sockets=[listener],
            threads=self.threads,
            connection_limit=self.connection_limit,
            # Workers keep idle connections in their pools for a while; keep them open
            # as long as waitress's default does.
            channel_timeout=120,
            # select() cannot watch file descriptors above 1024.
            asyncore_use_poll=True,
            # Record headers exactly as they came (X-Forwarded-* included).
            clear_untrusted_proxy_headers=False,
            ident=SERVER_HEADER,
            # With waitress's default (1) the pool thread sends the status line and the
            # headers, then the body, in two send()s of its own, and wakes the I/O loop
            # as well. Buffering up to waitress's old default instead leaves a small
            # answer to the I/O loop, which sends it in one send() once the call is done:
            # the same bytes for much less CPU per call (bench/sandbox_call.py). Larger
            # answers are still sent as they are written.
            **_TUNING,
        )

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
        server.task_dispatcher.shutdown(
            cancel_pending=True, timeout=max(0.0, deadline - time.monotonic())
        )
        # Sockets belong to the loop's thread: close them there, which also ends the loop.
        server.trigger.pull_trigger(lambda: _close_all(self._socket_map))
        if self._loop:
            self._loop.join(max(0.1, deadline - time.monotonic()))
            self._loop = None


def bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket for ``host:port``; OSError (e.g. port in use) if it cannot be.

    Binding ourselves rather than letting waitress resolve ``host`` means one socket, and
    so one port, even when a name such as ``localhost`` resolves to IPv4 and IPv6.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _close_all(socket_map: dict[int, Any]) -> None:
    for dispatcher in list(socket_map.values()):
        if isinstance(dispatcher, HTTPChannel):
            if dispatcher.writable() and not dispatcher.requests:
                # An answer finished just before the stop and not sent yet (send_bytes):
                # send it now rather than drop it.
                dispatcher.handle_write()
            # Also marks it closed and wakes a straggling task that waits to write to it.
            dispatcher.handle_close()
    wasyncore.close_all(socket_map, ignore_all=True)  # the listener and the trigger
