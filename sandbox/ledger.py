"""The idempotency ledger: one answer per request id, and the counters behind /_sandbox/stats."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Filing:
    """What became of one filing call."""

    answer: Any = None  # the stored answer (None when a failure was injected)
    duplicate: bool = False  # the id had been filed successfully before
    failed: bool = False  # a transient failure was injected; nothing was filed


class Ledger:
    """Remembers the first answer given for each request id, thread-safely.

    A filing call with a new id is processed once; later calls with the same id get the
    stored answer and count as duplicates. A call answered with an injected failure stores
    nothing, so retrying it is a fresh attempt (counted as ``retries_after_failure``).
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._random = random.Random()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._answers: dict[str, Any] = {}
            self._failed_ids: set[str] = set()
            self._seen_ids: set[str] = set()
            self._counters: Counter[str] = Counter()
            self._operations: Counter[str] = Counter()

    def file(
        self,
        request_id: str,
        operation: str,
        failure_rate: float,
        process: Callable[[], Any],
    ) -> Filing:
        """Answer a filing call: replay the stored answer, inject a failure, or ``process()``."""
        with self._lock:
            self._counters["requests"] += 1
            self._operations[operation] += 1
            self._seen_ids.add(request_id)
            if request_id in self._answers:
                self._counters["duplicates"] += 1
                return Filing(self._answers[request_id], duplicate=True)
            if request_id in self._failed_ids:
                self._counters["retries_after_failure"] += 1
            if failure_rate > 0 and self._random.random() < failure_rate:
                self._counters["failed_injected"] += 1
                self._failed_ids.add(request_id)
                return Filing(failed=True)
            # Processing under the lock keeps two racing calls with one id from both filing.
            answer = process()
            self._answers[request_id] = answer
            return Filing(answer)

    def answer_for(self, request_id: str) -> Any:
        """The stored answer for a request id, or None if it was never filed."""
        with self._lock:
            return self._answers.get(request_id)

    def count(self, operation: str) -> None:
        """Count a non-filing call (lookup, status poll, cancel) under its operation name."""
        with self._lock:
            self._operations[operation] += 1

    def bump(self, counter: str, by: int = 1) -> None:
        with self._lock:
            self._counters[counter] += by

    def stats(self, agency: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
        with self._lock:
            stats = {
                "agency": agency,
                "requests": self._counters["requests"],
                "unique_request_ids": len(self._seen_ids),
                "duplicates": self._counters["duplicates"],
                "failed_injected": self._counters["failed_injected"],
                "retries_after_failure": self._counters["retries_after_failure"],
                "by_operation": dict(self._operations),
            }
            for name in extra:
                stats[name] = self._counters[name]
        return stats
