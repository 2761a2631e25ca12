"""On a live stack (gunicorn with two workers, relay, tracker, worker): metrics add up, logs carry ids, top prints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import pytest
import requests
from support import wait_until

pytestmark = pytest.mark.e2e


def submit(stack, key, body) -> str:
    response = requests.post(stack.url + "/v1/applications", json=body, timeout=10, headers={
        "Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 202, response.text
    return response.json()["id"]


@pytest.fixture
def info_logs(env):
    """The stack logs every agency call (INFO), so the ids on those lines can be checked."""
    env["SATUPINTU_LOG_LEVEL"] = "INFO"


def test_metrics_logs_and_top_on_a_live_stack(info_logs, stack, make_key, example):
    key = make_key("submit", "read", "ops")
    auth = {"Authorization": f"Bearer {key}"}
    ids = [submit(stack, key, example) for _ in range(4)]
    assert requests.post(stack.url + "/v1/applications", json={"service": "business-startup", "data": {}},
                         headers=auth, timeout=10).status_code == 422

    def decided():
        docs = [requests.get(f"{stack.url}/v1/applications/{i}", headers=auth, timeout=10).json() for i in ids]
        return all(d["status"] == "completed" for d in docs)
    wait_until(decided, 120, message="four bundles to complete")

    # Whichever gunicorn worker answers the scrape, the submissions add up over both.
    pattern = re.compile(r'^satupintu_submissions_total\{outcome="(\w+)",service="business-startup"\} (\S+)$', re.M)
    for _ in range(6):
        text = requests.get(stack.url + "/metrics", headers=auth, timeout=10).text
        counts = {outcome: float(n) for outcome, n in pattern.findall(text)}
        assert counts == {"accepted": 4.0, "invalid": 1.0}, text
        assert 'satupintu_applications{service="business-startup",status="completed"} 4.0' in text
        assert re.search(r'^satupintu_agency_queue_depth\{agency="company-registry"\} 0\.0$', text, re.M)

    # The worker logged each agency call with the message's ids, and no NIK.
    worker_log = (stack.logs / "worker.log").read_text()
    assert "3171012345670123" not in worker_log
    calls = [line for line in map(json.loads, filter(lambda s: s.startswith("{"), worker_log.splitlines()))
             if line.get("logger") == "satupintu.calls"]
    assert {c["application_id"] for c in calls} == set(ids)
    for call in calls:
        assert call["role"] == "worker" and call["request_id"].startswith("req_") and call["agency"]
        assert call["traceparent"].split("-")[1].startswith(call["application_id"].split("_")[1][:32])

    # satupintu top --once prints a row per agency from /ops/api/agencies.
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "top", "--once"], capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, **stack.env, SATUPINTU_API_KEY=key))
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[2:]}
    assert set(rows) == {"company-registry", "municipality", "social-security", "tax-office"}
    assert rows["company-registry"][1] == "4" and rows["company-registry"][2] == "100.0%"


def test_the_gateway_opens_no_control_socket(stack):
    """gunicorn >= 25.1 opens one at a fixed path per user; two gateways on a machine (or two
    test runs) would take it from each other and remove it under each other's feet."""
    log = (stack.logs / "serve.log").read_text()
    assert "Listening at" in log
    assert "Control socket" not in log
