"""Per-agency limits on calls: how many at once, how many per second, and when not at all.

- **In flight**: the agency's slots (a semaphore of ``concurrency``, ``AgencyLimits.slots``)
  make ``limits.concurrency`` a hard bound on the calls of the whole process (calls of a
  previous connection may still be running after a reconnect).  The agency channel's prefetch is a little larger (``prefetch``): a
  delivery holds its prefetch slot until its outcome is confirmed and acked, and the
  broker's next delivery takes a round trip more, so a prefetch equal to the concurrency
  left the agency's slots idle for that long after every call (a fifth of them, measured
  with 200 ms calls).  The deliveries beyond the concurrency wait for a slot and start
  the moment a call ends.
- **Rate**: ``limits.rate_per_second`` spaces calls evenly (1/rate apart) across every
  thread of the process, lookups included, since each is a call the agency serves.
- **Maintenance windows** (``maintenance:`` in the agency file) defer calls: the worker
  parks the message in a delay tier until the window ends, spending no attempt.

      maintenance:
        - {days: [sat], start: "22:00", end: "02:00", timezone: Asia/Jakarta}  # weekly
        - {from: "2026-12-24T20:00:00+07:00", until: "2026-12-25T06:00:00+07:00"}  # once
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class RateLimiter:
    """At most ``rate`` calls per second, evenly spaced; shared by all threads."""

    def __init__(self, rate: float | None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.interval = 1.0 / rate if rate else 0.0
        self._clock, self._sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next slot; returns how long the caller must wait for it."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
            return slot - now

    def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)


def prefetch(concurrency: int) -> int:
    """Deliveries a worker holds for an agency whose ``limits.concurrency`` is given:
    half as many again, so the next call is at hand when one ends."""
    return concurrency + (concurrency + 1) // 2


class AgencyLimits:
    """Concurrency, rate and maintenance windows of one agency in one process."""

    def __init__(self, agency: Any):
        self.agency = agency.id
        # The agency's call slots: a call thread holds one for the length of each call.
        self.slots = threading.BoundedSemaphore(agency.concurrency)
        self.rate = RateLimiter(agency.rate_per_second)
        self.windows = [parse_window(w, where=f"{agency.file}: maintenance[{i}]")
                        for i, w in enumerate(getattr(agency, "maintenance", ()) or ())]

    def pace(self) -> None:
        """Wait for the next call the rate allows."""
        self.rate.acquire()

    def maintenance_remaining(self, now: dt.datetime | None = None) -> float:
        """Seconds until the maintenance window in force ends; 0 when none is."""
        if not self.windows:
            return 0.0
        now = now or dt.datetime.now(dt.UTC)
        return max((w.remaining(now) for w in self.windows), default=0.0)


# --- maintenance windows ----------------------------------------------------------------------

class _Once:
    def __init__(self, start: dt.datetime, end: dt.datetime):
        self.start, self.end = start, end

    def remaining(self, now: dt.datetime) -> float:
        return (self.end - now).total_seconds() if self.start <= now < self.end else 0.0


class _Weekly:
    def __init__(self, days: set[int], start: dt.time, end: dt.time, tz: dt.tzinfo):
        self.days, self.start, self.end, self.tz = days, start, end, tz

    def remaining(self, now: dt.datetime) -> float:
        local = now.astimezone(self.tz)
        best = 0.0
        # A window may start yesterday and run past midnight; ``days`` names the start day.
        for offset in (-1, 0):
            day = local.date() + dt.timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            begin = dt.datetime.combine(day, self.start, self.tz)
            end = dt.datetime.combine(day, self.end, self.tz) if self.end != dt.time(0) else \
                dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), self.tz)
            if end <= begin:
                end += dt.timedelta(days=1)
            if begin <= local < end:
                best = max(best, (end - local).total_seconds())
        return best


def _clock_time(value: str, where: str) -> dt.time:
    if value == "24:00":
        return dt.time(0)
    try:
        hours, minutes = value.split(":")
        return dt.time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not a time of day (HH:MM)") from None


def _instant(value: str, where: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not an ISO 8601 date and time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{where}: {value!r} needs a UTC offset (e.g. +07:00 or Z)")
    return moment


def parse_window(doc: dict[str, Any], *, where: str = "maintenance") -> _Once | _Weekly:
    """One window of an agency file's ``maintenance:`` list; ValueError naming ``where``."""
    if "from" in doc or "until" in doc:
        start, end = _instant(str(doc.get("from")), f"{where}.from"), _instant(str(doc.get("until")), f"{where}.until")
        if end <= start:
            raise ValueError(f"{where}.until: must be after from")
        return _Once(start, end)
    try:
        tz = ZoneInfo(doc.get("timezone", "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{where}.timezone: unknown time zone {doc.get('timezone')!r}") from None
    days = {DAYS.index(d) for d in doc.get("days", DAYS)}
    return _Weekly(days, _clock_time(doc["start"], f"{where}.start"), _clock_time(doc["end"], f"{where}.end"), tz)


def maintenance_problems(windows: list[dict[str, Any]], *, file: str) -> list[str]:
    """What is wrong with an agency file's maintenance windows (the schema checks the shape)."""
    problems = []
    for i, window in enumerate(windows or []):
        try:
            parse_window(window, where=f"{file}: maintenance.{i}")
        except ValueError as exc:
            problems.append(str(exc))
    return problems
