"""``clients create`` prints the key alone and says it is shown once; ``run --demo`` keeps one
demo client whose key changes every run."""

from __future__ import annotations

import os

from gateway import clients
from gateway.cli import main
from gateway.cli.run import command_name, demo_key


def authenticated(engine, key):
    with engine.begin() as conn:
        return clients.authenticate(conn, key)


def test_create_prints_only_the_key_on_stdout_and_says_it_is_shown_once(engine, capsys):
    assert main(["clients", "create", "counter-7", "--scope", "submit"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert out == key + "\n" and authenticated(engine, key).name == "counter-7"
    assert "shown only this once" in err


def test_a_second_demo_run_replaces_the_first_runs_key(engine):
    with engine.begin() as conn:  # a client of a demo before there was one demo client
        _client, legacy = clients.create(conn, "demo-1a2b3c", list(clients.SCOPES))
    first = demo_key(engine)
    second = demo_key(engine)
    assert authenticated(engine, first) is None and authenticated(engine, legacy) is None
    demo = authenticated(engine, second)
    assert demo.name == "demo" and demo.scopes == frozenset(clients.SCOPES)
    with engine.begin() as conn:
        active = [c["name"] for c in clients.list_all(conn) if not c["revoked_at"]]
    assert active.count("demo") == 1 and "demo-1a2b3c" not in active


def test_the_try_line_names_the_command_as_it_was_started(tmp_path, monkeypatch):
    script = tmp_path / ".venv" / "bin" / "satupintu"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert command_name(".venv/bin/satupintu") == ".venv/bin/satupintu"  # not on PATH: the path as run
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}/usr/bin")
    assert command_name(str(script)) == "satupintu"  # PATH finds this very script
    assert command_name("/x/gateway/cli/__main__.py").endswith(" -m gateway.cli")
