"""A total time for blocking HTTP calls (every agency call, REST or SOAP).

``requests`` and ``http.client`` know only per-read timeouts: an agency (or a proxy) that
sends one byte just before each read timeout keeps a call -- and the worker's slot for
that agency -- for ever, in the answer's head as well as in its body.  Here a call runs
inside ``REAPER.watch(seconds)``; every socket the egress-guarded connections create or
reuse on that thread meanwhile is noted (``REAPER.note``, from their public ``connect()``
and ``request()``), and a single reaper thread shuts those sockets down (``socket.shutdown``)
when the time is up.  The blocked read then fails at once, and the caller
(``adapters.transport``), seeing ``watch.expired``, reports the deadline rather than a
broken answer.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any


class Watch:
    """One call's deadline and the sockets it used; ``expired`` once the reaper acted."""

    __slots__ = ("deadline", "done", "expired", "seconds", "sockets")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.sockets: list[Any] = []
        self.expired = False
        self.done = False


def _shut(sock: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        sock.shutdown(socket.SHUT_RDWR)


class Reaper:
    """Shuts down the sockets of calls still running at their deadline (one thread, lazily started)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watch]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._local = threading.local()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, seconds: float) -> Iterator[Watch]:
        """Run the block with a deadline ``seconds`` from now, on this thread."""
        watch = Watch(seconds)
        with self._cond:
            heapq.heappush(self._heap, (watch.deadline, next(self._order), watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="call-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is watch:
                self._cond.notify()  # sooner than what the reaper waits for
        previous, self._local.watch = getattr(self._local, "watch", None), watch
        try:
            yield watch
        finally:
            self._local.watch = previous
            with self._cond:
                watch.done = True  # left in the heap; dropped when its time comes
                watch.sockets.clear()

    def note(self, sock: Any) -> None:
        """A socket used by this thread's watched call, if any (cheap when there is none)."""
        watch = getattr(self._local, "watch", None)
        if watch is None or sock is None:
            return
        with self._cond:
            if watch.expired:
                _shut(sock)
            elif not any(s is sock for s in watch.sockets):
                watch.sockets.append(sock)

    def _run(self) -> None:
        heap = self._heap
        while True:
            with self._cond:
                while not heap or heap[0][0] > time.monotonic():
                    self._cond.wait(heap[0][0] - time.monotonic() if heap else None)
                _deadline, _order, watch = heapq.heappop(heap)
                if watch.done:
                    continue
                watch.expired = True
                sockets = list(watch.sockets)
            for sock in sockets:
                _shut(sock)


REAPER = Reaper()
