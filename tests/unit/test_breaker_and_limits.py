"""The circuit breaker, the rate limiter and maintenance windows, on a fake clock."""

from __future__ import annotations

import datetime as dt

import pytest

from broker.breaker import CircuitBreaker
from broker.limits import RateLimiter, maintenance_problems, parse_window


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_transient_failures_and_probes_once_after_the_cool_down():
    clock, changes = Clock(), []
    breaker = CircuitBreaker("tax", failure_threshold=3, reset_after=10, clock=clock,
                             on_change=lambda agency, state: changes.append(state))
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()  # an answer resets the count: failures must be consecutive
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.retry_in() == 10
    clock.now += 10
    assert breaker.state == "half-open"
    assert breaker.allow()  # the one probe
    assert not breaker.allow()  # everyone else waits for its answer
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 10
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()
    assert changes == ["open", "half-open", "open", "half-open", "closed"]


def test_rate_limiter_spaces_calls_across_callers():
    clock = Clock()
    limiter = RateLimiter(4, clock=clock)
    assert [limiter.reserve() for _ in range(3)] == [0.0, 0.25, 0.5]
    clock.now += 2
    assert limiter.reserve() == 0.0
    assert RateLimiter(None, clock=clock).reserve() == 0.0


def test_weekly_maintenance_window_runs_past_midnight_in_its_time_zone():
    window = parse_window({"days": ["sat"], "start": "22:00", "end": "02:00", "timezone": "Asia/Jakarta"})
    jakarta = dt.timezone(dt.timedelta(hours=7))
    saturday_late = dt.datetime(2026, 11, 28, 23, 0, tzinfo=jakarta)  # a Saturday
    sunday_early = dt.datetime(2026, 11, 29, 1, 30, tzinfo=jakarta)
    sunday_late = dt.datetime(2026, 11, 29, 23, 0, tzinfo=jakarta)
    assert window.remaining(saturday_late) == 3 * 3600
    assert window.remaining(sunday_early) == 30 * 60
    assert window.remaining(sunday_late) == 0


def test_one_off_maintenance_window():
    window = parse_window({"from": "2026-12-24T20:00:00+07:00", "until": "2026-12-25T06:00:00+07:00"})
    assert window.remaining(dt.datetime(2026, 12, 24, 22, 0, tzinfo=dt.UTC)) == 3600  # 05:00 in Jakarta
    assert window.remaining(dt.datetime(2026, 12, 24, 12, 0, tzinfo=dt.UTC)) == 0
    assert window.remaining(dt.datetime(2026, 12, 25, 0, 0, tzinfo=dt.UTC)) == 0


@pytest.mark.parametrize(("window", "problem"), [
    ({"start": "22:00", "end": "02:00", "timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"from": "2026-12-24T20:00:00", "until": "2026-12-25T06:00:00+07:00"}, "needs a UTC offset"),
    ({"from": "2026-12-25T20:00:00Z", "until": "2026-12-25T06:00:00Z"}, "must be after from"),
])
def test_bad_maintenance_windows_are_reported_with_the_file_and_field(window, problem):  # noqa: ANN001
    [message] = maintenance_problems([window], file="agencies/tax.yaml")
    assert message.startswith("agencies/tax.yaml: maintenance.0") and problem in message
