"""Working-day clocks (DESIGN §2, issue 20): weekends, national holidays and the catalog's
collective leave are skipped, in the hall's time zone; a clock can stand still."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.calendar import WorkingCalendar
from core.domain.errors import ConfigError
from gateway.calendar_file import load_calendar, read_days_off

REPO = Path(__file__).resolve().parents[2]
WIB = ZoneInfo("Asia/Jakarta")


@pytest.fixture(scope="module")
def hall():
    return load_calendar(REPO / "config")


def at(y, m, d, h=10, minute=0):
    return dt.datetime(y, m, d, h, minute, tzinfo=WIB)


def test_idul_fitri_2026_and_its_collective_leave_are_days_off(hall):
    for day in ("2026-03-18", "2026-03-19", "2026-03-20", "2026-03-21", "2026-03-22", "2026-03-23", "2026-03-24"):
        assert not hall.is_working_day(dt.date.fromisoformat(day)), day
    assert hall.is_working_day(dt.date(2026, 3, 17)) and hall.is_working_day(dt.date(2026, 3, 25))
    # Filed on Tuesday 17 March at 10:00 with 2 working days: the 17th's rest, then 25 and 26.
    assert hall.add_working_days(at(2026, 3, 17), 2) == at(2026, 3, 26).astimezone(dt.UTC)
    assert hall.working_days_between(at(2026, 3, 17), at(2026, 3, 26)) == pytest.approx(2)


def test_a_deadline_that_crosses_new_year(hall):
    # Thursday 31 Dec 2026, 15:00 + 1 working day: 1 January is a holiday, 2-3 are a weekend.
    assert hall.add_working_days(at(2026, 12, 31, 15), 1) == at(2027, 1, 4, 15).astimezone(dt.UTC)


def test_independence_day_and_the_weekend_are_skipped(hall):
    # Friday 14 August 2026 + 1 working day: 15-16 weekend, 17 Independence Day.
    assert hall.add_working_days(at(2026, 8, 14), 1) == at(2026, 8, 18).astimezone(dt.UTC)


def test_a_clock_started_on_a_day_off_runs_from_the_next_working_day(hall):
    assert hall.add_working_days(at(2026, 8, 15, 9), 1) == dt.datetime(2026, 8, 18, 23, 59, 59, 999999,
                                                                        tzinfo=WIB).astimezone(dt.UTC)


def test_the_clock_stands_still_while_the_request_is_returned(hall):
    start = at(2026, 6, 2)  # Tuesday
    plain = hall.add_working_days(start, 3)
    assert plain == at(2026, 6, 5).astimezone(dt.UTC)  # Friday 10:00
    # Returned Wednesday 10:00, corrected Tuesday 9 June 10:00: four working days stood still.
    paused = hall.add_working_days(start, 3, pauses=[(at(2026, 6, 3), at(2026, 6, 9))])
    assert paused == at(2026, 6, 11).astimezone(dt.UTC)
    # Still returned: the clock never ends.
    with pytest.raises(ValueError):
        hall.add_working_days(start, 3, pauses=[(at(2026, 6, 3), None)])
    assert hall.working_days_between(start, at(2026, 6, 11), pauses=[(at(2026, 6, 3), at(2026, 6, 9))]) \
        == pytest.approx(3)


def test_the_hall_time_zone_decides_the_day():
    jakarta, jayapura = WorkingCalendar("Asia/Jakarta"), WorkingCalendar("Asia/Jayapura")
    friday_late_utc = dt.datetime(2026, 6, 5, 16, 30, tzinfo=dt.UTC)  # 23:30 in Jakarta, Saturday 01:30 in Jayapura
    assert jakarta.add_working_days(friday_late_utc, 0) == friday_late_utc
    assert jayapura.add_working_days(friday_late_utc, 0) > friday_late_utc  # waits for Monday


def test_the_year_lists_every_kind_of_day_off(hall):
    days = dict(hall.non_working_days(2026))
    assert days[dt.date(2026, 8, 17)] == "Independence Day"
    assert days[dt.date(2026, 3, 20)] == "Cuti bersama Idul Fitri"
    assert days[dt.date(2026, 3, 19)] == "Day of Silence"
    assert days[dt.date(2026, 1, 3)] == "Saturday"
    # 104 weekend days, 17 holidays, 8 days of leave; four holidays fall on a weekend (21-22 March,
    # Easter Sunday, Vesak on 31 May).
    assert len(days) == 104 + 17 + 8 - 4


@settings(max_examples=300, deadline=None)
@given(start=st.datetimes(min_value=dt.datetime(2025, 1, 1), max_value=dt.datetime(2027, 12, 31),
                          timezones=st.just(dt.UTC)),
       days=st.integers(min_value=0, max_value=40) | st.floats(min_value=0, max_value=40))
def test_a_deadline_is_never_on_a_day_off_nor_before_its_start(hall, start, days):
    due = hall.add_working_days(start, days)
    assert due >= start
    if days > 0:
        assert hall.is_working_day(due.astimezone(WIB).date())
    assert hall.working_days_between(start, due) == pytest.approx(days, abs=1e-6)


def write(tmp_path, text):
    path = tmp_path / "calendar.yaml"
    path.write_text(text)
    return path


def test_a_date_given_twice_names_both_lines(tmp_path):
    path = write(tmp_path, "days:\n  - {date: 2026-03-20, name: A}\n  - {date: 2026-03-23, name: B}\n"
                           "  - {date: 2026-03-20, name: C}\n")
    with pytest.raises(ConfigError, match=r"line 4: 2026-03-20 is given twice \(also on line 2\)"):
        read_days_off(path)


def test_an_impossible_date_names_its_line(tmp_path):
    path = write(tmp_path, "days:\n  - {date: 2026-02-30, name: Nope}\n")
    with pytest.raises(ConfigError, match=r"line 2: '2026-02-30' is not a date"):
        read_days_off(path)


def test_unknown_keys_and_kinds_are_named(tmp_path):
    path = write(tmp_path, "days:\n  - {date: 2026-02-20, name: A, knd: regional}\n"
                           "  - {date: 2026-02-23, name: B, kind: holiday}\n")
    with pytest.raises(ConfigError) as err:
        read_days_off(path)
    assert "line 2: unknown key 'knd'" in str(err.value) and "line 3: kind 'holiday'" in str(err.value)
