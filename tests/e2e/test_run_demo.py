"""`satupintu run --demo`: the contract of DESIGN §5, on real processes."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import wait_until

REPO = Path(__file__).resolve().parents[2]


def children(pid: int) -> dict[int, str]:
    """The direct children of ``pid`` with their command lines (from /proc)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return out


@pytest.fixture
def demo(env, broker, tmp_path):
    log = tmp_path / "run.log"
    # Port 0: `run` binds the gateway's address itself, and prints where it got.
    run_env = dict(os.environ, **env) | {"SATUPINTU_BIND": "127.0.0.1:0"}
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--demo"], env=run_env, cwd=tmp_path,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def key():
        if process.poll() is not None:
            pytest.fail(f"run --demo exited: {log.read_text()[-3000:]}")
        match = re.search(r"^SATUPINTU_API_KEY=(\S+)$", log.read_text(), re.M)
        return match and match.group(1)
    api_key = wait_until(key, 60, message="the API key line")
    output = log.read_text()
    run_env["SATUPINTU_URL"] = re.search(r"^SATUPINTU_URL=(http://\S+)$", output, re.M).group(1)
    for agency in ("company-registry", "municipality", "tax-office", "social-security"):
        assert re.search(rf"^sandbox {agency}: http://127\.0\.0\.1:\d+ ", output, re.M), output  # DESIGN §6
    yield process, api_key, run_env, log
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def satupintu(run_env, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=run_env, capture_output=True,
                          text=True, timeout=timeout)


def test_run_demo_completes_a_bundle_restarts_a_dead_child_and_stops_cleanly(demo):
    process, api_key, run_env, log = demo
    run_env = dict(run_env, SATUPINTU_API_KEY=api_key)
    example = str(REPO / "examples" / "business-startup.json")
    result = satupintu(run_env, "submit", example, "--wait")
    assert result.returncode == 0, result.stderr + log.read_text()[-3000:]
    app_id = result.stdout.split()[0]
    assert f"{app_id} completed" in result.stdout

    status = satupintu(run_env, "status", app_id)
    assert status.returncode == 0 and "completed" in status.stdout and "timeline:" in status.stdout

    before = children(process.pid)
    worker = next(pid for pid, cmd in before.items() if "gateway.cli worker" in cmd)
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: any("gateway.cli worker" in cmd and pid != worker
                           for pid, cmd in children(process.pid).items()), 60, message="a new worker")
    again = satupintu(run_env, "submit", example, "--wait")
    assert again.returncode == 0, again.stderr + log.read_text()[-3000:]

    kids = children(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    for pid in kids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_usage_errors_exit_2_and_failed_checks_exit_1(env, tmp_path):
    run_env = dict(os.environ, **env)
    assert satupintu(run_env, "no-such-command").returncode == 2
    assert satupintu(run_env, "dead-letters", "replay").returncode == 2
    bad = tmp_path / "bad-config"
    (bad / "agencies").mkdir(parents=True)
    (bad / "services").mkdir()
    (bad / "agencies" / "x.yaml").write_text("id: x\nname: X\nadapter: rest\n")
    result = satupintu(dict(run_env, SATUPINTU_CONFIG=str(bad)), "config", "check")
    assert result.returncode == 1
    assert "x.yaml" in result.stderr and "'endpoint' is a required property" in result.stderr
