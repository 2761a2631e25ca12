"""The benchmark harness runs end to end and reports sane fields (never a timing: that is bench's job)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import AMQP_URL, queue_exists

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _bench(*args: str) -> dict:
    run = subprocess.run([sys.executable, "-m", "bench", *args, "--json"], cwd=REPO, capture_output=True,
                         text=True, timeout=280, env={k: v for k, v in os.environ.items()
                                                      if not k.startswith("SATUPINTU_")} | {
                             "SATUPINTU_AMQP_URL": AMQP_URL})
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def test_fast_with_twenty_bundles_reports_every_field_and_cleans_up():
    report = _bench("fast", "-n", "20", "-c", "4")
    assert report["machine"]["nproc"] >= 1
    (result,) = report["results"]
    assert result["scenario"] == "fast"
    assert result["submit"]["requests"] == 20 and result["submit"]["errors"] == 0
    assert result["end_to_end"]["bundles"] == 20
    assert result["end_to_end"]["statuses"] == {"completed": 20}
    assert not result["end_to_end"]["timed_out"]
    for figure in (result["submit"]["per_second"], result["end_to_end"]["per_second"],
                   result["submit"]["p99_ms"], result["end_to_end"]["p50_ms"]):
        assert figure > 0
    assert result["submit"]["p50_ms"] <= result["submit"]["p99_ms"]
    # Three parallel steps: one dispatch and one outcome message each, and a "sent" event
    # for each call still running after SATUPINTU_SENT_EVENT_AFTER (1 s; rare, on a busy machine).
    assert 6 <= result["messages_per_bundle"] <= 9
    for role in ("gateway", "relay", "tracker", "worker", "sandbox"):
        assert result["processes"][role]["peak_rss_mb"] > 0
    assert result["processes"]["sandbox"]["processes"] == 3  # three agencies, three servers (decision 38)
    assert result["cpu_ms_per_bundle"] > 0
    # The run's namespace is gone from the broker.
    assert result["namespace"] and not queue_exists(f"{result['namespace']}.tracker")


def test_relay_and_big_store_scaled_down_report_their_figures():
    report = _bench("relay", "big-store", "--relay-messages", "300", "--big-store-rows", "3000",
                    "--lookups", "50")
    relay, store = report["results"]
    assert relay["relay"]["messages"] == 300 and relay["relay"]["per_second"] > 0
    assert store["stored"] == 3000
    assert store["lookup_small"]["requests"] == 50 and store["lookup_big"]["requests"] == 50
    assert store["lookup_small"]["errors"] == store["lookup_big"]["errors"] == 0
    assert store["p99_ratio"] > 0


def test_ceiling_measures_a_bare_flask_endpoint_every_way():
    # 400 requests: CPU time is read in clock ticks (10 ms), and 50 requests of ~0.3 ms each
    # could all fall within one tick of the server's processes, reading as none.
    report = _bench("ceiling", "-n", "400", "-c", "4")
    (result,) = report["results"]
    assert set(result["ceiling"]) == {"sync 2", "gthread 2x8", "gateway's 2x8"}
    for figures in result["ceiling"].values():
        assert figures["requests"] == 400 and figures["errors"] == 0
        assert figures["per_second"] > 0 and figures["cpu_ms_per_request"] > 0


def test_the_naive_peer_files_every_bundle_at_the_same_agencies():
    report = _bench("naive", "-n", "20", "-c", "4")
    (result,) = report["results"]
    assert result["scenario"] == "naive"
    assert result["submit"]["requests"] == 20 and result["submit"]["errors"] == 0
    assert result["end_to_end"] == {**result["end_to_end"], "bundles": 20, "statuses": {"filed": 20}}
    assert result["end_to_end"]["per_second"] == result["submit"]["per_second"] > 0
    assert result["messages_per_bundle"] == 0  # nothing stored, nothing queued: that is the point
    assert set(result["processes"]) == {"naive", "sandbox"}
    assert result["processes"]["sandbox"]["processes"] == 3
    assert result["processes"]["naive"]["cpu_seconds"] > 0
