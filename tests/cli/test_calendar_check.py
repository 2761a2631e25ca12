"""``satupintu calendar check YEAR``: the year's non-working days and why."""

from __future__ import annotations

from gateway.cli import main


def test_the_year_lists_holidays_and_collective_leave_with_their_names(env, capsys):
    assert main(["calendar", "check", "2026"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2026 in Asia/Jakarta: ") and "Saturdays" in lines[0] and "Sundays" in lines[0]
    assert "2026-03-20  Fri  Cuti bersama Idul Fitri  (calendar.yaml)" in lines
    assert any(line.startswith("2026-08-17  Mon  ") and line.endswith("(national holiday)") for line in lines)
    reasons = [line.split("  ")[2] for line in lines[1:]]
    assert "Saturday" not in reasons and "Sunday" not in reasons  # weekends are counted, not listed


def test_weekends_are_counted(env, capsys):
    assert main(["calendar", "check", "2026"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    saturdays, sundays = (int(first.split(word)[0].split()[-1]) for word in (" Saturdays", " Sundays"))
    # 2026 has 52 of each; the ones that are also holidays are listed with the holiday instead.
    assert 45 <= saturdays <= 52 and 45 <= sundays <= 52


def test_a_calendar_file_with_problems_exits_1_naming_the_line(config_dir, capsys):
    (config_dir / "calendar.yaml").write_text("days:\n  - {date: 2026-13-01, name: Nowhere}\n", encoding="utf-8")
    assert main(["calendar", "check", "2026"]) == 1
    assert "line 2: '2026-13-01' is not a date" in capsys.readouterr().err
