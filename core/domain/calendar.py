"""Working days in the hall's time zone: the legal clocks of DESIGN §2.

A day is a working day unless it is a Saturday or Sunday, one of Indonesia's national public
holidays (the ``holidays`` package), or a day of the catalog's calendar file (collective
leave, *cuti bersama*, which the government sets each year by joint ministerial decree, and
regional days).  Clocks count *working time*: each working day contributes its fraction of
time that has passed, in the hall's time zone, so "3 working days" from Monday 10:00 ends on
Thursday 10:00, and from a Saturday it runs from Monday 00:00.  A clock can stand still
(``pauses``: while a request waits for the citizen's correction).

A deadline that is reached exactly at local midnight is the end of the working day before,
never the first instant of a day off.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Iterator, Mapping
from zoneinfo import ZoneInfo

import holidays

DAY = dt.timedelta(days=1)
MOST_DAYS = 3660  # how far a clock may run before the calendar refuses (ten years)
Pause = tuple[dt.datetime, dt.datetime | None]  # from, until (None: still paused)


class WorkingCalendar:
    """Which days are worked, and working-time arithmetic over them."""

    def __init__(self, timezone: str = "Asia/Jakarta", days_off: Mapping[dt.date, str] | None = None,
                 country: str = "ID", subdivision: str | None = None):
        self.zone = ZoneInfo(timezone)
        self.timezone = timezone
        self.days_off = dict(days_off or {})
        self.country, self.subdivision = country, subdivision

    @functools.lru_cache(maxsize=64)  # noqa: B019 - a calendar lives as long as the process
    def _public_holidays(self, year: int) -> Mapping[dt.date, str]:
        return holidays.country_holidays(self.country, subdiv=self.subdivision, years=year)

    def day_off(self, day: dt.date) -> str | None:
        """Why ``day`` is not a working day, or None when it is one."""
        if day in self.days_off:
            return self.days_off[day]
        holiday = self._public_holidays(day.year).get(day)
        if holiday:
            return holiday
        if day.weekday() >= 5:
            return "Saturday" if day.weekday() == 5 else "Sunday"
        return None

    def is_working_day(self, day: dt.date) -> bool:
        return self.day_off(day) is None

    def non_working_days(self, year: int) -> list[tuple[dt.date, str]]:
        """Every day of ``year`` that is not worked, with why (``satupintu calendar check``)."""
        day, out = dt.date(year, 1, 1), []
        while day.year == year:
            reason = self.day_off(day)
            if reason:
                out.append((day, reason))
            day += DAY
        return out

    # -- working time ---------------------------------------------------------------------

    def _local(self, moment: dt.datetime) -> dt.datetime:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(self.zone)

    def _bounds(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        start = dt.datetime.combine(day, dt.time(), self.zone)
        return start, dt.datetime.combine(day + DAY, dt.time(), self.zone)

    def _segments(self, start: dt.datetime, pauses: Iterable[Pause]) -> Iterator[tuple[dt.datetime, dt.datetime, float]]:
        """From ``start`` on: (from, until, seconds per working day) of each stretch of running clock."""
        stops = sorted((self._local(a), self._local(b) if b else None) for a, b in pauses)
        day = self._local(start).date()
        for _ in range(MOST_DAYS):
            if self.is_working_day(day):
                lo, hi = self._bounds(day)
                length = (hi - lo).total_seconds()
                lo = max(lo, self._local(start))
                pieces = [(lo, hi)] if lo < hi else []
                for a, b in stops:
                    cut = []
                    for p, q in pieces:
                        if b is not None and (b <= p or a >= q) or b is None and a >= q:
                            cut.append((p, q))
                            continue
                        if a > p:
                            cut.append((p, a))
                        if b is not None and b < q:
                            cut.append((b, q))
                    pieces = cut
                for p, q in pieces:
                    yield p, q, length
            day += DAY
        raise ValueError(f"a working-day clock ran past {MOST_DAYS} days")

    def add_working_days(self, start: dt.datetime, days: float, pauses: Iterable[Pause] = ()) -> dt.datetime:
        """The moment ``days`` working days after ``start`` (in UTC), the clock standing still in ``pauses``."""
        if days < 0:
            raise ValueError("a deadline cannot be before its start")
        left = float(days)
        for p, q, length in self._segments(start, pauses):
            span = (q - p).total_seconds() / length
            if left <= span:
                due = p + dt.timedelta(seconds=left * length)
                if due == q and due.time() == dt.time() and due > p:
                    due -= dt.timedelta(microseconds=1)  # the end of this day, not the start of the next
                return max(due, self._local(start)).astimezone(dt.UTC)
            left -= span
        raise AssertionError("unreachable")  # _segments raises first

    def working_days_between(self, start: dt.datetime, end: dt.datetime, pauses: Iterable[Pause] = ()) -> float:
        """How many working days of running clock lie between ``start`` and ``end`` (0 if end ≤ start)."""
        end = self._local(end)
        total = 0.0
        if end <= self._local(start):
            return 0.0
        for p, q, length in self._segments(start, pauses):
            if p >= end:
                break
            total += (min(q, end) - p).total_seconds() / length
        return total
