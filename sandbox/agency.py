"""What every sandbox agency shares: its knobs, its ledger, its request log and references."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from .knobs import Knobs
from .ledger import Ledger

REQUEST_LOG_SIZE = 1000
BODY_LIMIT = 4096


# The last second formatted by iso_second(): every call in the same second reuses it.
_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00+00:00")


def iso_second(second: int) -> str:
    """``second`` (Unix time, whole seconds) as ISO 8601 in UTC, e.g.
    ``2024-05-01T09:30:00+00:00``."""
    global _last_second
    cached = _last_second  # one read: another thread may replace it meanwhile
    if cached[0] == second:
        return cached[1]
    text = datetime.fromtimestamp(second, UTC).isoformat()
    _last_second = (second, text)
    return text


def now_iso() -> str:
    """The time now, to the second, as ``datetime.now(UTC).isoformat(timespec="seconds")``.

    Whole nanoseconds floored to seconds, as datetime.now() truncates, so the two agree
    even in the last microsecond of a second; formatting once per second instead of per
    call saves the sandbox measurable CPU under load.
    """
    return iso_second(time.time_ns() // 1_000_000_000)


class Received(NamedTuple):
    """A received request as recorded; turned into its log entry only when it is read."""

    second: int  # Unix time, whole seconds
    method: str
    path: str  # with ``?query`` if there was one
    headers: list[tuple[str, str]]  # (WSGI environ key, value): HTTP_*, then CONTENT_*
    body: bytes  # at most BODY_LIMIT bytes

    def entry(self) -> dict[str, Any]:
        """The entry ``GET /_sandbox/requests`` shows for this request."""
        return {
            "time": iso_second(self.second),
            "method": self.method,
            "path": self.path,
            "headers": {_header_name(key): value for key, value in self.headers},
            "body": self.body.decode("utf-8", errors="replace"),
        }


def _header_name(environ_key: str) -> str:
    """``HTTP_IDEMPOTENCY_KEY`` -> ``Idempotency-Key``; ``CONTENT_TYPE`` -> ``Content-Type``."""
    if environ_key.startswith("HTTP_"):
        environ_key = environ_key[5:]
    return environ_key.replace("_", "-").title()


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
        self._log: deque[Received] = deque(maxlen=REQUEST_LOG_SIZE)
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
        """Keep a copy of a received request for GET /_sandbox/requests.

        Only the raw material is kept here; header names and the time are formatted when
        the log is read, which is rare, rather than on every call.
        """
        headers = [item for item in environ.items() if item[0].startswith("HTTP_")]
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            value = environ.get(key)
            if value:
                headers.append((key, value))
        query = environ.get("QUERY_STRING", "")
        path = environ.get("PATH_INFO", "")
        received = Received(
            time.time_ns() // 1_000_000_000,
            environ.get("REQUEST_METHOD", ""),
            f"{path}?{query}" if query else path,
            headers,
            body[:BODY_LIMIT],
        )
        with self._log_lock:
            self._log.append(received)

    def call_started(self) -> None:
        """Count a call as in flight (for ``peak_in_flight``); pair with ``call_ended()``."""
        with self._flight_lock:
            self._in_flight += 1
            if self._in_flight > self._peak_in_flight:
                self._peak_in_flight = self._in_flight

    def call_ended(self) -> None:
        with self._flight_lock:
            self._in_flight -= 1

    def recent_requests(self, limit: int) -> list[dict[str, Any]]:
        """The most recent requests, newest first."""
        with self._log_lock:
            received = list(self._log)
        return [request.entry() for request in received[::-1][:limit]]

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
                # One draw of a uniform number below 10**digits: the same distribution as
                # ``digits`` independent digits, for a tenth of the calls into random.
                ref = f"{prefix}{self._random.randrange(10**digits):0{digits}d}"
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
