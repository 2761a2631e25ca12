"""Metrics: what each role counts, what /metrics reads at scrape time, and adding up across processes."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import requests
from prometheus_client import REGISTRY

from adapters.base import Outcome, OutcomeKind
from core import metrics
from core.settings import Settings
from gateway.ops import queries, queues

REPO = Path(__file__).resolve().parents[2]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def fake_broker(monkeypatch):
    snap = queues.Snapshot(True, "reachable", (
        queues.QueueDepth("t.agency.company-registry", "agency", "company-registry", 7, 2),
        queues.QueueDepth("t.tracker", "tracker", None, 4, 1),
        queues.QueueDepth("t.dead", "dead", None, 0, 1),
    ), 0.0)
    monkeypatch.setattr(queues, "snapshot", lambda *a, **k: snap)
    monkeypatch.setattr(queries, "circuit_states", lambda: {"company-registry": "open", "tax-office": "closed"})


def test_an_agency_call_is_timed_by_agency_operation_and_outcome():
    before = sample("satupintu_agency_call_duration_seconds_count", agency="a1", operation="op", outcome="approved")
    metrics.observe_agency_call("a1", "op", "send", Outcome(kind=OutcomeKind.APPROVED), 0.2, {"request_id": "r"})
    metrics.observe_agency_call("a1", "op", "poll", "unsupported", 0.1, {})
    assert sample("satupintu_agency_call_duration_seconds_count", agency="a1", operation="op",
                  outcome="approved") == before + 1
    assert sample("satupintu_agency_call_duration_seconds_bucket", agency="a1", operation="op", outcome="approved",
                  le="0.25") >= 1
    assert sample("satupintu_agency_call_duration_seconds_count", agency="a1", operation="op",
                  outcome="poll:unsupported") >= 1


def test_submissions_are_counted_by_service_and_outcome(client, make_key, example):
    key = make_key("submit", "read")
    headers = {"Authorization": f"Bearer {key}"}
    accepted = sample("satupintu_submissions_total", service="business-startup", outcome="accepted")
    invalid = sample("satupintu_submissions_total", service="business-startup", outcome="invalid")
    unknown = sample("satupintu_submissions_total", service="unknown", outcome="invalid")
    assert client.post("/v1/applications", json=example, headers=headers).status_code == 202
    bad = {**example, "data": {}}
    assert client.post("/v1/applications", json=bad, headers=headers).status_code == 422
    assert client.post("/v1/applications", json={"service": "no-such", "data": {}}, headers=headers).status_code == 422
    assert sample("satupintu_submissions_total", service="business-startup", outcome="accepted") == accepted + 1
    assert sample("satupintu_submissions_total", service="business-startup", outcome="invalid") == invalid + 1
    assert sample("satupintu_submissions_total", service="unknown", outcome="invalid") == unknown + 1


def test_the_scrape_reads_store_broker_and_breakers(client, make_key, example, fake_broker):
    key = make_key("submit", "read")
    client.post("/v1/applications", json=example, headers={"Authorization": f"Bearer {key}"})
    text = client.get("/metrics", headers={"Authorization": f"Bearer {make_key('ops')}"}).get_data(as_text=True)
    for line in ('satupintu_applications{service="business-startup",status="in_progress"} 1.0',
                 'satupintu_agency_queue_depth{agency="company-registry"} 7.0',
                 'satupintu_agency_queue_consumers{agency="company-registry"} 2.0',
                 "satupintu_tracker_queue_depth 4.0",
                 "satupintu_broker_up 1.0",
                 'satupintu_circuit_state{agency="company-registry"} 2.0',
                 'satupintu_circuit_state{agency="tax-office"} 0.0',
                 "satupintu_outbox_unsent 1.0"):
        assert line in text, line
    assert "satupintu_outbox_lag_seconds" in text and "satupintu_tracker_lag_seconds" in text
    assert "satupintu_submissions_total" in text
    # One family per name, or Prometheus rejects the whole scrape.
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types))


def test_counters_of_several_processes_add_up_in_multiprocess_mode(tmp_path):
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path), PYTHONPATH=str(REPO))
    bump = "from core import metrics; metrics.SUBMISSIONS.labels('svc', 'accepted').inc(); " \
           "metrics.AGENCY_CALL_SECONDS.labels('a', 'op', 'approved').observe(0.3)"
    for _ in range(3):  # three gunicorn workers, say
        subprocess.run([sys.executable, "-c", bump], env=env, check=True)
    read = textwrap.dedent("""
        from prometheus_client import generate_latest
        from core import metrics
        print(generate_latest(metrics.process_registry()).decode())
    """)
    text = subprocess.run([sys.executable, "-c", read], env=env, check=True, capture_output=True,
                          text=True).stdout
    assert 'satupintu_submissions_total{outcome="accepted",service="svc"} 3.0' in text
    assert 'satupintu_agency_call_duration_seconds_count{agency="a",operation="op",outcome="approved"} 3.0' in text


def test_a_worker_serves_its_own_metrics_to_the_scrape_token_only():
    settings = Settings(metrics_port="0", metrics_token="scrape-token-for-tests")
    port = metrics.expose("worker", settings)
    assert port
    metrics.RETRIES.labels(f"agency-{uuid.uuid4().hex[:6]}").inc()
    url = f"http://127.0.0.1:{port}/metrics"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer not-the-token"}, timeout=5).status_code == 401
    text = requests.get(url, headers={"Authorization": "Bearer scrape-token-for-tests"}, timeout=5).text
    assert "satupintu_retries_total" in text


def test_a_role_without_a_scrape_token_refuses_every_scrape_but_answers_health(caplog):
    port = metrics.expose("tracker", Settings(metrics_port="0"))
    assert "SATUPINTU_METRICS_TOKEN" in caplog.text
    assert requests.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer "},
                        timeout=5).status_code == 401
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


def test_the_gateway_scrape_needs_the_token_or_an_ops_key(app, client, make_key):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {make_key('submit', 'read')}"}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {make_key('ops')}"}).status_code == 200
    ctx = app.extensions["satupintu"]
    ctx.settings = dataclasses.replace(ctx.settings, metrics_token="scrape-token-for-tests")
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-token-for-tests"}).status_code == 200


def test_without_a_port_nothing_is_served():
    assert metrics.expose("relay", Settings(metrics_token="t")) is None


@pytest.mark.parametrize(("code", "outcome"), [(202, "accepted"), (422, "invalid"), (409, "conflict"),
                                                (503, "error"), (401, "unauthorized")])
def test_answers_map_to_submission_outcomes(code, outcome):
    assert metrics.submission_outcome(code) == outcome
