"""How soon a revoked key is refused, now that gateway processes remember verified keys
for ``SATUPINTU_KEY_CACHE_SECONDS`` (docs/security.md, "How long a revoked key keeps working")."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

from gateway import clients
from gateway.api.keycache import KeyCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def revoke_elsewhere(name: str) -> None:
    """`satupintu clients revoke NAME`, run as the operator runs it: another process."""
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "clients", "revoke", name], env=os.environ,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_revoked_by_another_process_is_refused_once_its_cache_time_is_up(app, client, make_key):
    context = app.extensions["satupintu"]
    clock = Clock()
    context.keys = KeyCache(clock=clock)
    key = make_key("read", name="counter-surabaya")
    assert client.get("/v1/services", headers=bearer(key)).status_code == 200
    revoke_elsewhere("counter-surabaya")
    clock.now += context.settings.key_cache_seconds - 0.01
    assert client.get("/v1/services", headers=bearer(key)).status_code == 200  # the documented delay
    clock.now += 0.01
    refused = client.get("/v1/services", headers=bearer(key))
    assert refused.status_code == 401
    assert refused.mimetype == "application/problem+json"


def test_a_key_revoked_in_the_gateway_process_is_refused_at_once(app, client, engine, make_key):
    key = make_key("read", name="counter-medan")
    assert client.get("/v1/services", headers=bearer(key)).status_code == 200
    with engine.begin() as conn:
        clients.revoke(conn, "counter-medan")
    assert client.get("/v1/services", headers=bearer(key)).status_code == 401


def test_a_rotated_key_in_the_gateway_process_is_refused_at_once_and_the_new_one_works(app, client, engine,
                                                                                       make_key):
    old = make_key("read", name="counter-bandung")
    assert client.get("/v1/services", headers=bearer(old)).status_code == 200
    with engine.begin() as conn:
        new = clients.rotate(conn, "counter-bandung")
    assert client.get("/v1/services", headers=bearer(old)).status_code == 401
    assert client.get("/v1/services", headers=bearer(new)).status_code == 200


def test_with_the_cache_off_a_key_revoked_elsewhere_is_refused_at_once(app, client, make_key):
    context = app.extensions["satupintu"]
    context.settings = dataclasses.replace(context.settings, key_cache_seconds=0)
    key = make_key("read", name="counter-makassar")
    assert client.get("/v1/services", headers=bearer(key)).status_code == 200
    revoke_elsewhere("counter-makassar")
    assert client.get("/v1/services", headers=bearer(key)).status_code == 401


def test_an_operators_key_revoked_elsewhere_is_refused_by_the_dashboard_at_once(app, client, make_key):
    key = make_key("ops", name="operator-ani")
    assert client.get("/ops/api/applications", headers=bearer(key)).status_code == 200
    revoke_elsewhere("operator-ani")
    assert client.get("/ops/api/applications", headers=bearer(key)).status_code == 401
