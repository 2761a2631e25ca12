"""A tiny timer wheel: run jobs later on a small worker pool instead of a thread per job."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class Scheduler:
    """Runs ``job()`` once ``delay`` seconds have passed, on one of ``workers`` threads."""

    def __init__(self, workers: int = 16) -> None:
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._wake = threading.Condition()
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="sandbox-job"
        )
        self._stopped = False
        self._thread = threading.Thread(
            target=self._run, name="sandbox-scheduler", daemon=True
        )
        self._thread.start()

    def later(self, delay: float, job: Callable[[], None]) -> None:
        with self._wake:
            heapq.heappush(
                self._queue, (time.monotonic() + delay, next(self._sequence), job)
            )
            self._wake.notify()

    def stop(self) -> None:
        """Drop pending jobs; jobs already running finish in the background."""
        with self._wake:
            self._stopped = True
            self._queue.clear()
            self._wake.notify()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and (
                    not self._queue or self._queue[0][0] > time.monotonic()
                ):
                    timeout = (
                        self._queue[0][0] - time.monotonic() if self._queue else None
                    )
                    self._wake.wait(timeout)
                if self._stopped:
                    return
                _, _, job = heapq.heappop(self._queue)
            try:
                self._pool.submit(self._guarded, job)
            except RuntimeError:  # pool shut down while we were waking
                return

    @staticmethod
    def _guarded(job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:  # a failing job must not take the worker down
            log.exception("sandbox background job failed")
