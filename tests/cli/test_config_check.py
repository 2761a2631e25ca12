"""``satupintu config check``: every agency reached (unless ``--offline``), the step graph
as it runs, and the catalog's calendar file."""

from __future__ import annotations

import pytest

from gateway.cli import main
from gateway.cli.config_check import describe_graph, stages


def test_an_agency_that_refuses_connections_is_named_and_fails_the_check(sandbox, config_dir, monkeypatch, capsys):
    monkeypatch.setenv("SATUPINTU_SANDBOX_COMPANY_REGISTRY_URL", "http://127.0.0.1:1")
    assert main(["config", "check"]) == 1
    out, err = capsys.readouterr()
    assert "agency company-registry: cannot connect to http://127.0.0.1:1 (connection refused)" in err.splitlines()
    for agency in ("municipality", "tax-office", "social-security"):  # the real sandbox servers answer
        assert any(line.startswith(f"agency {agency}: ") and line.endswith("reachable, ok") for line in out.splitlines())


def test_offline_contacts_no_agency(config_dir, monkeypatch, capsys):
    monkeypatch.setenv("SATUPINTU_SANDBOX_COMPANY_REGISTRY_URL", "http://127.0.0.1:1")
    assert main(["config", "check", "--offline"]) == 0
    assert "cannot connect" not in capsys.readouterr().err


def test_steps_that_run_side_by_side_are_shown_together(config_dir, capsys):
    assert main(["config", "check", "--offline"]) == 0
    assert "service business-startup: 4 step(s): company -> (tax, permit) -> social" in capsys.readouterr().out


@pytest.mark.parametrize(("after", "shown"), [
    ({"a": [], "b": ["a"], "c": ["b"]}, "a -> b -> c"),
    ({"a": [], "b": []}, "(a, b)"),
    ({"a": [], "b": ["a"], "c": [], "d": ["b", "c"]}, "(a, c) -> b -> d"),
])
def test_a_step_comes_in_the_stage_after_its_latest_dependency(after, shown):
    assert describe_graph(after, list(after)) == shown
    assert sum(len(stage) for stage in stages(after, list(after))) == len(after)


def test_a_calendar_with_problems_fails_the_check_naming_each_line(config_dir, capsys):
    (config_dir / "calendar.yaml").write_text(
        "days:\n"
        "  - {date: 2026-03-20, name: Cuti bersama Idul Fitri}\n"
        "  - {date: 2026-03-20, name: Twice}\n"
        "  - {date: 2026-02-30, name: Impossible}\n", encoding="utf-8")
    assert main(["config", "check", "--offline"]) == 1
    err = capsys.readouterr().err
    assert "line 3: 2026-03-20 is given twice (also on line 2)" in err
    assert "line 4: '2026-02-30' is not a date" in err
