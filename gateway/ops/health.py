"""Per-agency health from the history: calls, success rate, latency percentiles, latency by minute.

A call is the span from a worker's ``attempt`` event to the ``outcome`` or ``retry`` event
of the same request and attempt; both times are the worker's clock, so the span is the
agency call plus a little of the worker's own work.  A failure is a ``retry`` (the call
failed and will be tried again) or a dead-lettered ``failed`` event.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from ..store import records
from ..store import tables as t

WINDOW = dt.timedelta(hours=1)
MAX_ROWS = 50_000  # newest events read for the window; bounds the work on a busy store
_TYPES = ("attempt", "outcome", "retry", "failed")


@dataclass
class Calls:
    """What one agency's calls looked like in the window."""

    calls: int = 0
    successes: int = 0
    failures: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds
    by_minute: dict[dt.datetime, list[float]] = field(default_factory=lambda: defaultdict(list))

    @property
    def success_rate(self) -> float | None:
        decided = self.successes + self.failures
        return None if decided == 0 else self.successes / decided

    def percentile(self, q: float) -> float | None:
        return percentile(self.latencies, q)

    def series(self, minutes: int, end: dt.datetime) -> list[dict[str, Any]]:
        """p50 and p95 per minute for the last ``minutes`` minutes (None where no calls)."""
        end = end.replace(second=0, microsecond=0)
        out = []
        for i in range(minutes - 1, -1, -1):
            minute = end - dt.timedelta(minutes=i)
            values = self.by_minute.get(minute, [])
            out.append({"minute": records.iso(minute), "calls": len(values),
                        "p50_ms": _ms(percentile(values, 0.5)), "p95_ms": _ms(percentile(values, 0.95))})
        return out


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def since_value(conn: Connection, moment: dt.datetime) -> dt.datetime:
    """A datetime to compare with stored ones: SQLite keeps naive UTC."""
    return moment.replace(tzinfo=None) if conn.dialect.name == "sqlite" else moment


def agency_calls(conn: Connection, *, window: dt.timedelta = WINDOW,
                 now: dt.datetime | None = None) -> dict[str, Calls]:
    """Calls per agency in the last ``window``."""
    now = now or records.now()
    query = (select(t.events.c.request_id, t.events.c.type, t.events.c.detail, t.events.c.occurred_at,
                    t.requests.c.agency)
             .join(t.requests, t.requests.c.id == t.events.c.request_id)
             .where(t.events.c.type.in_(_TYPES), t.events.c.occurred_at >= since_value(conn, now - window))
             .order_by(t.events.c.id.desc()).limit(MAX_ROWS))
    started: dict[tuple[str, int], dt.datetime] = {}
    ends = []
    stats: dict[str, Calls] = defaultdict(Calls)
    for row in reversed(list(conn.execute(query))):
        detail = row.detail or {}
        attempt = int(detail.get("attempt") or 0)
        when = _aware(row.occurred_at)
        if row.type == "attempt":
            # Published only for calls still running after a second; the call ends in an
            # outcome or retry event, where it is counted.
            started[(row.request_id, attempt)] = when
            continue
        calls = stats[row.agency]
        if row.type == "outcome":
            calls.successes += 1
        elif row.type == "retry" or detail.get("dead_letter"):
            calls.failures += 1
        if row.type in ("outcome", "retry") or detail.get("dead_letter"):
            calls.calls += 1
        if row.type in ("outcome", "retry"):
            if detail.get("duration_ms") is not None:
                # Timed by the worker around the agency call itself.
                seconds = float(detail["duration_ms"]) / 1000
                calls.latencies.append(seconds)
                calls.by_minute[when.replace(second=0, microsecond=0)].append(seconds)
            else:
                ends.append((row.agency, (row.request_id, attempt), when))
    for agency, key, when in ends:  # events of workers before duration_ms: pair with the attempt
        start = started.get(key)
        if start is None or when < start:
            continue
        seconds = (when - start).total_seconds()
        stats[agency].latencies.append(seconds)
        stats[agency].by_minute[when.replace(second=0, microsecond=0)].append(seconds)
    return dict(stats)
