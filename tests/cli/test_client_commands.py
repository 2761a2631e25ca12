"""``submit`` and ``status`` on the client library against a real gateway over HTTP: the
progress on a log (no ``\\r`` frames), the missing field a 422 names, and a reader of
``satupintu status ID | head`` that goes away early."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

from gateway.cli import main


def write(tmp_path, name, body) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(body), encoding="utf-8")
    return str(path)


def test_submitting_many_to_a_log_writes_plain_progress_lines(gateway_url, example, tmp_path, capsys):
    files = [write(tmp_path, f"{i}.json", dict(example, reference=f"R-{i}")) for i in range(3)]
    assert main(["submit", *files]) == 0
    out, err = capsys.readouterr()
    assert len(set(out.split())) == 3  # the three ids
    assert "\r" not in err
    assert err.splitlines() == ["1/3 submitted", "2/3 submitted", "3/3 submitted"]


def test_a_missing_required_field_is_named_itself_not_its_parent(gateway_url, example, tmp_path, capsys):
    body = copy.deepcopy(example)
    del body["data"]["applicant"]["name"]
    assert main(["submit", write(tmp_path, "bad.json", body)]) == 1
    err = capsys.readouterr().err
    assert "  /data/applicant/name: 'name' is a required property" in err.splitlines()


def test_a_body_with_an_unknown_field_is_a_usage_error(gateway_url, example, tmp_path, capsys):
    assert main(["submit", write(tmp_path, "typo.json", dict(example, refrence="R-1"))]) == 2
    assert "unknown field refrence" in capsys.readouterr().err


def test_status_shows_the_requests_and_the_timeline(gateway_url, example, tmp_path, capsys):
    assert main(["submit", write(tmp_path, "one.json", example)]) == 0
    app_id = capsys.readouterr().out.strip()
    assert main(["status", app_id]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{app_id}  business-startup  in_progress")
    assert "timeline:" in out and "submitted" in out


def test_a_reader_that_goes_away_ends_status_without_a_traceback(gateway_url, env, example, tmp_path, capsys):
    assert main(["submit", write(tmp_path, "one.json", example)]) == 0
    app_id = capsys.readouterr().out.strip()
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "status", app_id], env=dict(os.environ, **env),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # as `| head` does once it has its lines: every write now fails with EPIPE
    err = process.stderr.read().decode()
    assert process.wait(60) == 141, err  # 128 + SIGPIPE, as a filter killed by the signal
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_an_unreachable_gateway_is_one_line(env, monkeypatch, capsys):
    monkeypatch.setenv("SATUPINTU_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("SATUPINTU_API_KEY", "sp_unused")
    assert main(["status", "app_x"]) == 1
    assert capsys.readouterr().err.startswith("satupintu: the gateway at http://127.0.0.1:1 does not answer")
