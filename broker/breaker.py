"""A circuit breaker per agency: stop calling an agency that keeps failing, probe it later.

    closed ──(failure_threshold consecutive transient failures)──▶ open
    open ──(reset_after seconds)──▶ half-open: exactly one call goes through as a probe
    half-open ──probe answers──▶ closed        half-open ──probe fails──▶ open again

Only *transient* failures count (timeouts, 503s, refused connections): a rejection or a
permanent error is an answer, so the agency is up.  While the breaker is not letting a
call through the worker parks the message in a delay tier without spending an attempt.

Breakers live in the worker process; ``states()`` returns this process's breakers merged
with the snapshots other worker processes on this machine wrote (``SATUPINTU_STATE_DIR``,
default ``var/state``), so metrics and ``/readyz`` in the gateway can show them.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("satupintu.breaker")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
_SEVERITY = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class CircuitBreaker:
    """The breaker of one agency in one process; thread-safe."""

    def __init__(self, agency: str, *, failure_threshold: int, reset_after: float,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str, str], None] | None = None):
        self.agency = agency
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._changed = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.reset_after:
                return HALF_OPEN  # the next allow() lets a probe through
            return self._state

    def _allow(self) -> bool:
        """Whether a call may go to the agency now (in half-open: the one probe)."""
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._state == OPEN:
                if self._clock() - self._opened_at < self.reset_after:
                    return False
                self._set(HALF_OPEN)
            if self._probing:
                return False
            self._probing = True
            return True

    def retry_in(self) -> float:
        """Seconds until the breaker lets a probe through (0 when it would now)."""
        with self._lock:
            if self._state != OPEN:
                return 0.0
            return max(0.0, self.reset_after - (self._clock() - self._opened_at))

    def _record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._probing = False
            if self._state != CLOSED:
                self._set(CLOSED)

    def _record_failure(self) -> None:
        """A transient failure: count it, and open when the threshold is reached (or the probe failed)."""
        with self._lock:
            self._failures += 1
            probe_failed = self._state == HALF_OPEN
            self._probing = False
            if probe_failed or (self._state == CLOSED and self._failures >= self.failure_threshold):
                self._opened_at = self._clock()
                self._set(OPEN)
            # Failures of calls that were in flight when it opened change nothing.

    def allow(self) -> bool:
        """Whether a call may go to the agency now (in half-open: the one probe)."""
        try:
            return self._allow()
        finally:
            self._report()

    def record_success(self) -> None:
        """The agency answered (a decision, an acknowledgement or a permanent error)."""
        self._record_success()
        self._report()

    def record_failure(self) -> None:
        """A transient failure: count it, and open when the threshold is reached (or the probe failed)."""
        self._record_failure()
        self._report()

    def release(self) -> None:
        """The call allowed by ``allow()`` ended without an answer either way (e.g. skipped)."""
        with self._lock:
            self._probing = False

    def _set(self, state: str) -> None:
        """Change state (lock held); the change is reported once the lock is released."""
        old, self._state = self._state, state
        if old != state:
            log.warning("circuit breaker of %s: %s -> %s", self.agency, old, state)
            self._changed = True

    def _report(self) -> None:
        if not self._changed:
            return
        self._changed = False
        if self._on_change:
            try:
                self._on_change(self.agency, self.state)
            except Exception:
                log.exception("breaker state report failed")


# --- the registry of this process, and snapshots for other processes ---------------------------

_registry: dict[str, CircuitBreaker] = {}
_registry_lock = threading.Lock()


def state_dir() -> Path:
    return Path(os.environ.get("SATUPINTU_STATE_DIR", "var/state")) / "breakers"


def _snapshot_file() -> Path:
    return state_dir() / f"{socket.gethostname()}-{os.getpid()}.json"


def _write_snapshot(_agency: str = "", _state: str = "") -> None:
    """Write this process's breaker states where other local processes can read them."""
    path = _snapshot_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "at": time.time(),
                                   "states": local_states()}))
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot write breaker states to %s: %s", path, exc)


def breaker_for(agency, *, snapshot: bool = False) -> CircuitBreaker:
    """The breaker of ``agency`` in this process (created on first use)."""
    with _registry_lock:
        breaker = _registry.get(agency.id)
        if breaker is None:
            breaker = CircuitBreaker(agency.id, failure_threshold=agency.failure_threshold,
                                     reset_after=agency.reset_after,
                                     on_change=_write_snapshot if snapshot else None)
            _registry[agency.id] = breaker
    if snapshot:
        _write_snapshot()
    return breaker


def local_states() -> dict[str, str]:
    """The states of this process's breakers."""
    with _registry_lock:
        breakers = list(_registry.values())
    return {b.agency: b.state for b in breakers}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def states() -> dict[str, str]:
    """``{agency: "closed" | "open" | "half-open"}``: the worst state any live local worker reports."""
    merged = local_states()
    folder = state_dir()
    host = socket.gethostname()
    for path in folder.glob("*.json") if folder.is_dir() else ():
        try:
            snap = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if snap.get("host") != host or snap.get("pid") == os.getpid():
            continue
        if not _alive(int(snap.get("pid", 0))):
            path.unlink(missing_ok=True)  # a dead worker's breakers say nothing any more
            continue
        for agency, state in (snap.get("states") or {}).items():
            if _SEVERITY.get(state, 0) >= _SEVERITY.get(merged.get(agency, CLOSED), 0):
                merged[agency] = state
    return merged


def reset_registry() -> None:
    """Forget this process's breakers (tests)."""
    with _registry_lock:
        _registry.clear()
