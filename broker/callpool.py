"""A pool of threads for agency calls, cheaper per call than ``ThreadPoolExecutor``.

The worker hands each agency call to a thread and gets the outcome back through the
ioloop (``add_callback_threadsafe``), so it never needs a ``Future``.  The standard
executor builds one (a ``Condition`` and its lock) per call and, to decide whether to
start a thread, waits on a semaphore with a zero timeout, which allocates another lock:
together about a twelfth of the worker's CPU in the ``fast`` benchmark (py-spy).  Here
a call costs one ``SimpleQueue.put`` and a counter update; threads start on demand, up
to ``size``, and stay (the worker's calls are bounded by the agencies' concurrency
limits, which ``size`` adds up).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("satupintu.worker")

_STOP = None


class CallPool:
    """Run callables on up to ``size`` threads; ``submit`` never blocks."""

    def __init__(self, size: int, *, name: str = "agency-call"):
        if size < 1:
            raise ValueError("a call pool needs at least one thread")
        self.size = size
        self.name = name
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._unfinished = 0  # submitted and not yet finished (queued or running)
        self._closed = False

    def submit(self, call: Callable[[], None]) -> None:
        """Queue ``call``; a new thread starts when every thread so far is busy."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the call pool is shut down")
            self._unfinished += 1
            if self._unfinished > len(self._threads) and len(self._threads) < self.size:
                thread = threading.Thread(target=self._serve, name=f"{self.name}-{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)
        self._queue.put(call)

    @property
    def threads(self) -> int:
        return len(self._threads)

    def shutdown(self, *, wait: bool = True) -> int:
        """Stop taking calls, drop those not started yet, let running ones finish.

        Returns how many queued calls were dropped (their messages stay unacked, so the
        broker hands them out again)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        dropped = 0
        while True:
            try:
                call = self._queue.get_nowait()
            except queue.Empty:
                break
            if call is not _STOP:
                dropped += 1
        for _ in threads:
            self._queue.put(_STOP)
        if wait:
            for thread in threads:
                thread.join()
        return dropped

    def _serve(self) -> None:
        while True:
            call = self._queue.get()
            if call is _STOP:
                return
            try:
                call()
            except Exception:  # noqa: BLE001 - a call's own errors are its business; the thread lives on
                log.exception("an agency call raised")
            finally:
                with self._lock:
                    self._unfinished -= 1
