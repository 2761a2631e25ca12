"""What every sandbox agency shares: its knobs, its ledger, its request log and references."""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from .knobs import Knobs
from .ledger import Ledger

REQUEST_LOG_SIZE = 1000
BODY_LIMIT = 4096


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Agency:
    """One pretend government agency's in-memory state, shared by its HTTP handlers."""

    def __init__(
        self, agency_id: str, protocol: str, knobs: dict[str, Any] | None = None
    ) -> None:
        self.id = agency_id
        self.protocol = protocol  # "rest" or "soap"
        self.knobs = Knobs(agency_id, knobs)
        self.ledger = Ledger()
        self.extra_stats: tuple[str, ...] = ()
        # Agency-specific additions to /_sandbox/stats beyond the counters.
        self.report: Callable[[], dict[str, Any]] = dict
        self._log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._log_lock = threading.Lock()
        self._references: set[str] = set()
        self._ref_lock = threading.Lock()
        self._random = random.Random()
        self._reset_hooks: list[Callable[[], None]] = []
        # Bumped on reset so background work started before a reset can tell it is stale.
        self.generation = 0
        self._in_flight = 0
        self._peak_in_flight = 0
        self._flight_lock = threading.Lock()

    # -- requests on the wire -------------------------------------------------------
    def record(self, environ: dict[str, Any], body: bytes) -> None:
        """Keep a copy of a received request for GET /_sandbox/requests."""
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                headers[key.replace("_", "-").title()] = environ[key]
        query = environ.get("QUERY_STRING", "")
        entry = {
            "time": now_iso(),
            "method": environ.get("REQUEST_METHOD", ""),
            "path": environ.get("PATH_INFO", "") + (f"?{query}" if query else ""),
            "headers": headers,
            "body": body[:BODY_LIMIT].decode("utf-8", errors="replace"),
        }
        with self._log_lock:
            self._log.append(entry)

    @contextmanager
    def answering(self) -> Iterator[None]:
        """Count a call as in flight while it is being answered (for ``peak_in_flight``)."""
        with self._flight_lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._flight_lock:
                self._in_flight -= 1

    def recent_requests(self, limit: int) -> list[dict[str, Any]]:
        """The most recent requests, newest first."""
        with self._log_lock:
            entries = list(self._log)
        return entries[::-1][:limit]

    # -- decisions and references ---------------------------------------------------
    def rejection(self, payload: Any) -> str | None:
        """The reason to reject a filing whose string values contain the reject marker."""
        marker = self.knobs.get("reject_if_contains")
        if not marker:
            return None
        for path, value in _strings(payload, ""):
            if marker in value:
                return f"rejected by rule: {path or 'value'} contains {marker!r}"
        return None

    def reference(self, prefix: str, digits: int) -> str:
        """A fresh, never-repeated reference such as ``AHU-0123456789``."""
        with self._ref_lock:
            while True:
                ref = prefix + "".join(
                    self._random.choice("0123456789") for _ in range(digits)
                )
                if ref not in self._references:
                    self._references.add(ref)
                    return ref

    # -- lifecycle ------------------------------------------------------------------
    def on_reset(self, hook: Callable[[], None]) -> None:
        self._reset_hooks.append(hook)

    def reset(self) -> None:
        """Forget stats, stored answers, records and the request log (knobs stay)."""
        self.generation += 1
        self.ledger.reset()
        with self._log_lock:
            self._log.clear()
        with self._flight_lock:
            self._peak_in_flight = self._in_flight
        for hook in self._reset_hooks:
            hook()

    def stats(self) -> dict[str, Any]:
        with self._flight_lock:
            peak = self._peak_in_flight
        return {
            **self.ledger.stats(self.id, self.extra_stats),
            "peak_in_flight": peak,
            **self.report(),
        }


def _strings(value: Any, path: str):
    """Yield (path, string) for every string inside a JSON-like value."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")
