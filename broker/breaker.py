"""A circuit breaker per agency: stop calling an agency that keeps failing, probe it later.

    closed ──(failure_threshold consecutive transient failures)──▶ open
    open ──(reset_after seconds)──▶ half-open: exactly one call goes through as a probe
    half-open ──probe answers──▶ closed        half-open ──probe fails──▶ open again

Only *transient* failures count (timeouts, 503s, refused connections): a rejection or a
permanent error is an answer, so the agency is up.  While the breaker is not letting a
call through the worker parks the message in a delay tier without spending an attempt.

Breakers live in the worker process; ``states()`` returns this process's breakers merged
with the snapshots other worker processes on this machine wrote under the settings'
``state_dir`` (``SATUPINTU_STATE_DIR``, default ``var/state``), so metrics and ``/readyz``
in the gateway can show them.
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

    def allow(self) -> bool:
        """Whether a call may go to the agency now (in half-open: the one probe)."""
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.reset_after:
                self._set(HALF_OPEN)
            allowed = self._state == CLOSED or (self._state == HALF_OPEN and not self._probing)
            if allowed and self._state == HALF_OPEN:
                self._probing = True
        self._report()
        return allowed

    def retry_in(self) -> float:
        """Seconds until the breaker lets a probe through (0 when it would now)."""
        with self._lock:
            if self._state != OPEN:
                return 0.0
            return max(0.0, self.reset_after - (self._clock() - self._opened_at))

    def record_success(self) -> None:
        """The agency answered (a decision, an acknowledgement or a permanent error)."""
        with self._lock:
            self._failures = 0
            self._probing = False
            self._set(CLOSED)
        self._report()

    def record_failure(self) -> None:
        """A transient failure: count it, and open when the threshold is reached (or the probe failed).
        Failures of calls that were in flight when it opened change nothing."""
        with self._lock:
            self._failures += 1
            probe_failed = self._state == HALF_OPEN
            self._probing = False
            if probe_failed or (self._state == CLOSED and self._failures >= self.failure_threshold):
                self._opened_at = self._clock()
                self._set(OPEN)
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


def _snapshot_file(state_dir: str | Path) -> Path:
    return Path(state_dir) / "breakers" / f"{socket.gethostname()}-{os.getpid()}.json"


def _snapshot_writer(state_dir: str | Path) -> Callable[[str, str], None]:
    """A change report that writes this process's breaker states where other local processes
    (the gateway's metrics and ``/readyz``) read them."""
    path = _snapshot_file(state_dir)

    def write(_agency: str = "", _state: str = "") -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "at": time.time(),
                                       "states": local_states()}))
            tmp.replace(path)
        except OSError as exc:
            log.warning("cannot write breaker states to %s: %s", path, exc)
    return write


def breaker_for(agency, *, state_dir: str | Path | None = None) -> CircuitBreaker:
    """The breaker of ``agency`` in this process (created on first use); with ``state_dir``
    (``Settings.state_dir``) its changes are written there for the other local processes."""
    report = _snapshot_writer(state_dir) if state_dir is not None else None
    with _registry_lock:
        breaker = _registry.get(agency.id)
        if breaker is None:
            breaker = CircuitBreaker(agency.id, failure_threshold=agency.failure_threshold,
                                     reset_after=agency.reset_after, on_change=report)
            _registry[agency.id] = breaker
    if report is not None:
        report()
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


def states(state_dir: str | Path | None = None) -> dict[str, str]:
    """``{agency: "closed" | "open" | "half-open"}``: the worst state of this process's breakers
    and, with ``state_dir``, of those any live local worker reported there."""
    merged = local_states()
    if state_dir is None:
        return merged
    folder = Path(state_dir) / "breakers"
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
