"""One agency's HTTP server: waitress on its own port, with its own pool of threads.

Waitress keeps HTTP/1.1 connections alive and answers from a fixed thread pool, as a real
agency's server does; werkzeug's development server closed every connection and started a
thread for each, which cost the sandbox much of its CPU under load. Each server has its own
socket map, so it runs its own I/O loop in a thread of its own and stops on its own.

A call the app says is quick (``quick(method, path)``: the filing calls without a latency
knob) is answered on the I/O loop's thread rather than handed to the pool: see
``AgencyChannel``.
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
from waitress.server import TcpWSGIServer
from waitress.task import WSGITask

SERVER_HEADER = "satupintu-sandbox"
# True in the environ of a call answered on the I/O loop's thread: it must not block.
ON_IO_LOOP = "sandbox.on_io_loop"
Quick = Callable[[str, str], bool]  # (method, path) -> may be answered on the I/O loop
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
        quick: Quick | None = None,
    ) -> None:
        self.name = name
        self.app = app
        self.host = host
        self.port = port
        self.threads = threads
        self.connection_limit = connection_limit
        self.quick = quick
        self._server: AgencyWSGIServer | None = None
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

    def _create(self, listener: socket.socket) -> AgencyWSGIServer:
        adjustments = Adjustments(
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
        # What waitress's create_server() does for one listening socket, with our classes.
        return AgencyWSGIServer(
            self.app,
            self._socket_map,  # our own: this server's loop serves only it
            _sock=listener,
            adj=adjustments,
            bind_socket=False,
            sockinfo=(listener.family, listener.type, listener.proto, listener.getsockname()),
            quick=self.quick,
        )

    def begin_stop(self) -> None:
        """Let the pool's idle threads go; busy ones finish their call, then go."""
        if self._server:
            self._server.quick = None  # no new calls are answered, on the loop either
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


class AgencyTask(WSGITask):
    """Tells the app (``ON_IO_LOOP``) whether it answers on the I/O loop's thread."""

    def get_environment(self) -> dict[str, Any]:
        environ = super().get_environment()
        environ[ON_IO_LOOP] = self.channel.server.on_loop()
        return environ


class AgencyChannel(HTTPChannel):
    """A connection whose quick calls are answered on the I/O loop's thread.

    Handing a call to the pool costs a thread switch there and back, a pull of the
    loop's trigger and two more turns of the loop, each of which asks every open
    connection (a worker pool keeps many idle ones) whether it is readable or writable.
    A quick call takes less CPU than that hand-over, and the GIL lets only one thread
    run at a time anyway; so the loop answers it right after reading it and sends the
    answer at once. Slow calls (a ``latency_ms`` sleep) still go to the pool, so one
    never holds up the loop.
    """

    task_class = AgencyTask
    answer_here = False  # set by AgencyWSGIServer.add_task for a quick call just read

    def handle_read(self) -> None:
        super().handle_read()
        if not self.answer_here:
            return
        while self.answer_here:
            self.answer_here = False
            self.service()  # sets answer_here again if a pipelined quick call is next
        if self.writable():
            self.handle_write()  # now, rather than on the loop's next turn


class AgencyWSGIServer(TcpWSGIServer):
    """Waitress's TCP server, answering quick calls on its loop (``AgencyChannel``)."""

    channel_class = AgencyChannel

    def __init__(self, *args: Any, quick: Quick | None, **kwargs: Any) -> None:
        self.quick = quick
        self.loop_thread: int | None = None
        super().__init__(*args, **kwargs)

    def run(self) -> None:
        self.loop_thread = threading.get_ident()
        super().run()

    def on_loop(self) -> bool:
        return threading.get_ident() == self.loop_thread

    def add_task(self, task: AgencyChannel) -> None:
        """Start on the channel's next call: here if it is quick and we are the loop,
        else in the pool. Called with the channel's requests lock held, so the loop
        answers it once ``handle_read`` has read what there was to read."""
        quick = self.quick
        request = task.requests[0]
        if quick and self.on_loop() and quick(request.command, request.path):
            task.answer_here = True
        else:
            super().add_task(task)

    def pull_trigger(self) -> None:
        """Wake the loop when a pool thread has written; the loop itself need not be."""
        if not self.on_loop():
            super().pull_trigger()


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
