"""The per-client rate limit: a token bucket in the store, so it holds across processes."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import pytest
import requests
from support import address, listening_socket, wait_until

from core.settings import Settings
from gateway.api import ratelimit


def limited(app, rate, burst):
    context = app.extensions["satupintu"]
    context.settings = dataclasses.replace(context.settings, rate_limit=rate, rate_burst=burst)


def test_a_client_over_its_burst_gets_429_with_retry_after(app, client, auth, make_key):
    limited(app, 1, 5)
    answers = [client.get("/v1/services", headers=auth) for _ in range(8)]
    assert [r.status_code for r in answers] == [200] * 5 + [429] * 3
    refused = answers[-1]
    assert refused.mimetype == "application/problem+json"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.get_json()["type"].endswith("/rate-limited")
    other = {"Authorization": f"Bearer {make_key('read')}"}
    assert client.get("/v1/services", headers=other).status_code == 200  # each client has its own bucket


def test_the_bucket_refills_at_the_rate(engine):
    take = [ratelimit.take(engine, "cli_x", rate=2, burst=2, now=1000.0 + i * 0.1) for i in range(3)]
    assert [v.allowed for v in take] == [True, True, False]
    assert ratelimit.take(engine, "cli_x", rate=2, burst=2, now=1000.7).allowed  # 0.5 s later: one token back
    assert not ratelimit.take(engine, "cli_x", rate=2, burst=2, now=1000.8).allowed


def test_zero_turns_the_limit_off(app, client, auth):
    limited(app, 0, 1)
    assert all(client.get("/v1/services", headers=auth).status_code == 200 for _ in range(20))


@pytest.mark.parametrize("value, rate, burst", [(None, 100.0, 200), ("10", 10.0, 20), ("5:7", 5.0, 7),
                                                ("0", 0.0, 1)])
def test_the_setting_reads_rate_and_burst(value, rate, burst):
    env = {} if value is None else {"SATUPINTU_RATE_LIMIT": value}
    settings = Settings.from_env(env)
    assert (settings.rate_limit, settings.rate_burst) == (rate, burst)


def test_a_bad_setting_is_refused():
    with pytest.raises(ValueError, match="RATE:BURST"):
        Settings.from_env({"SATUPINTU_RATE_LIMIT": "fast"})


def serve(env, tmp_path, rate_limit):
    """`satupintu serve` with three gunicorn workers and the limit ``rate_limit``."""
    log = (tmp_path / "serve.log").open("wb")
    listener = listening_socket()  # gunicorn takes it over as fd://N: port 0, never released
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], stdout=log, stderr=subprocess.STDOUT,
                            env=os.environ | env | {"SATUPINTU_WEB_WORKERS": "3", "SATUPINTU_RATE_LIMIT": rate_limit,
                                                    "SATUPINTU_BIND": f"fd://{listener.fileno()}"},
                            start_new_session=True, pass_fds=(listener.fileno(),))
    url = f"http://{address(listener)}"
    listener.close()  # gunicorn holds it now

    def up():
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
        try:
            return requests.get(url + "/healthz", timeout=1).ok
        except requests.RequestException:
            return False
    wait_until(up, 30, message="satupintu serve")
    return url, proc


@pytest.fixture
def served(env, engine, tmp_path):
    """Three gunicorn workers and a small limit: no leasing, one UPSERT per request."""
    url, proc = serve(env, tmp_path, "2:10")
    yield url
    proc.terminate()
    proc.wait(15)


@pytest.fixture
def served_leasing(env, engine, tmp_path):
    """Three gunicorn workers and a limit at which each worker leases 2 tokens at a time."""
    assert ratelimit.plan(20, 40, Settings().rate_lease_seconds) == ratelimit.Plan(0.1, 2, 38.0)
    url, proc = serve(env, tmp_path, "20:40")
    yield url
    proc.terminate()
    proc.wait(15)


def test_the_limit_holds_across_gunicorn_workers(served, api_key):
    codes = []
    for _ in range(30):  # a new connection each time, so the requests spread over the workers
        with requests.Session() as session:
            response = session.get(served + "/v1/services", headers={"Authorization": f"Bearer {api_key}",
                                                                      "Connection": "close"}, timeout=10)
            codes.append(response.status_code)
            if response.status_code == 429:
                assert response.headers["Retry-After"].isdigit()
                assert response.headers["Content-Type"].startswith("application/problem+json")
    allowed = codes.count(200)
    assert 10 <= allowed <= 14, codes  # the burst, plus what 2/s refilled while the loop ran
    assert codes.count(429) == 30 - allowed


def test_the_limit_holds_across_gunicorn_workers_that_lease_tokens(served_leasing, api_key):
    codes = []
    started = time.monotonic()
    for _ in range(80):  # a new connection each time, so the requests spread over the workers
        with requests.Session() as session:
            codes.append(session.get(served_leasing + "/v1/services", timeout=10, headers={
                "Authorization": f"Bearer {api_key}", "Connection": "close"}).status_code)
    elapsed = time.monotonic() - started
    allowed = codes.count(200)
    # Never more than one exact bucket allows over the loop; leasing may leave a few unspent.
    assert allowed <= 40 + 20 * elapsed, (allowed, elapsed, codes)
    assert allowed >= 30, codes
    assert codes.count(429) == 80 - allowed


def test_a_chunked_body_over_the_cap_is_413_problem_json_through_gunicorn(served, api_key):
    def chunks():
        yield b'{"service": "business-startup", "data": {"x": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}}'
    response = requests.post(served + "/v1/applications", data=chunks(), timeout=10, headers={
        "Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.headers["Content-Type"].startswith("application/problem+json")
    declared = requests.post(served + "/v1/applications", data=b"x" * (2 * 1024 * 1024), timeout=10, headers={
        "Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
    assert declared.status_code == 413
    assert declared.headers["Content-Type"].startswith("application/problem+json")
