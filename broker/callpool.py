"""A pool of threads for agency calls, cheaper per call than ``ThreadPoolExecutor``.

The worker hands each agency call to a thread and gets the outcome back through the
ioloop (``add_callback_threadsafe``), so it never needs a ``Future``.  The standard
executor builds one (a ``Condition`` and its lock) per call and, to decide whether to
start a thread, waits on a semaphore with a zero timeout, which allocates another lock:
together about a twelfth of the worker's CPU in the ``fast`` benchmark (py-spy).  Here
a call costs one ``SimpleQueue.put`` and a ``deque.pop``; threads start on demand, up to
``size``, and stay (the worker's calls are bounded by the agencies' concurrency limits,
which ``size`` adds up).

No lock is taken per call.  A thread that is about to wait for work leaves a token in
``_idle`` (``deque.append``, atomic); ``submit`` takes one (``deque.pop``, atomic) and
starts a thread only when there is none.  A shared counter under a lock did the same,
but hundreds of call threads taking that lock after every call queued behind whichever
of them lost the GIL while holding it: in py-spy, a third of the worker's busy threads
were waiting there (``python -m bench.worker_calls``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
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
        # One token per thread that is waiting for a call, or about to: each ``submit``
        # spends one, or starts a thread of its own.  Tokens may outnumber the idle threads
        # once the pool is full (a thread that finds a call queued for it leaves one too),
        # but only then, when no thread can start anyway.
        self._idle: deque[bool] = deque()
        self._lock = threading.Lock()  # starting threads and shutting down; not per call
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, call: Callable[[], None]) -> None:
        """Queue ``call``; a new thread starts when no thread is waiting for work."""
        if self._closed:
            raise RuntimeError("the call pool is shut down")
        try:
            self._idle.pop()
        except IndexError:
            if len(self._threads) < self.size:
                self._start()
        self._queue.put(call)

    def _start(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the call pool is shut down")
            if len(self._threads) < self.size:
                thread = threading.Thread(target=self._serve, name=f"{self.name}-{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)

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
        get, idle = self._queue.get, self._idle.append
        call = get()  # the call this thread was started for (or a later one)
        while call is not _STOP:
            try:
                call()
            except Exception:  # noqa: BLE001 - a call's own errors are its business; the thread lives on
                log.exception("an agency call raised")
            call = None  # do not keep the finished call (and what it holds) while waiting
            idle(True)
            call = get()
