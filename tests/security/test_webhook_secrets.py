"""A client's webhook secret is its own: random, shown once, rotatable, and not derivable from
the store alone (issue 26, finding 5)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from sqlalchemy import select

from gateway import clients
from gateway.store import tables as t
from gateway.store.migrations import upgrade


def test_the_secret_needs_the_server_key_not_only_the_store(engine):
    with engine.begin() as conn:
        client, key = clients.create(conn, "portal", ["submit", "read"], "http://127.0.0.1:9/hook")
        row = conn.execute(select(t.clients).where(t.clients.c.id == client.id)).mappings().one()
        secret = clients.webhook_secret_of(conn, "portal", "server-key")
    assert secret.startswith("whsec_")
    stored = " ".join(str(v) for v in row.values())
    assert secret not in stored and secret[6:] not in stored
    assert secret != "whsec_" + hashlib.sha256(key.encode()).hexdigest() and row["key_hash"] not in secret
    # Another server key gives another secret: what the store holds is not enough to sign.
    with engine.connect() as conn:
        assert clients.webhook_secret_of(conn, "portal", "another-key") != secret


def test_rotating_the_secret_changes_it_and_two_clients_never_share_one(engine):
    with engine.begin() as conn:
        clients.create(conn, "a", ["read"])
        clients.create(conn, "b", ["read"])
        first = clients.webhook_secret_of(conn, "a", "k")
        assert first != clients.webhook_secret_of(conn, "b", "k")
        rotated = clients.rotate_webhook_secret(conn, "a", "k")
        assert rotated != first and clients.webhook_secret_of(conn, "a", "k") == rotated


def test_existing_clients_get_a_secret_of_their_own_on_upgrade(tmp_path):
    from sqlalchemy import text

    from gateway.store import make_engine
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine)
    with engine.begin() as conn:  # a client as schema 7 stored it: no nonce
        clients.create(conn, "old", ["read"])
        conn.execute(text("UPDATE clients SET webhook_nonce = NULL"))
        conn.execute(text("DELETE FROM schema_version WHERE version = 8"))
    assert upgrade(engine) == [8]
    with engine.connect() as conn:
        assert conn.execute(select(t.clients.c.webhook_nonce)).scalar()
    engine.dispose()


def test_clients_create_shows_the_webhook_secret_once_on_stderr(env, engine):
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "clients", "create", "hooked", "--scope", "read",
                          "--webhook-url", "http://127.0.0.1:9/hook"], capture_output=True, text=True, env={**os.environ, **env})
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 1 and run.stdout.startswith("sp_")  # stdout: the key alone
    assert "webhook secret (shown only this once" in run.stderr and "whsec_" in run.stderr
    rotated = subprocess.run([sys.executable, "-m", "gateway.cli", "clients", "webhook-secret", "hooked"],
                             capture_output=True, text=True, env={**os.environ, **env})
    assert rotated.returncode == 0 and rotated.stdout.strip().startswith("whsec_")
    assert rotated.stdout.strip() not in run.stderr
