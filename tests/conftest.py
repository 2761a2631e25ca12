"""Shared fixtures, one shape for fake and real: ``settings``, ``engine``, ``catalog``, ``app``,
``client``, ``api_key``, ``broker`` (real RabbitMQ, own namespace), ``sandbox`` (real agency
servers) and ``stack`` (the roles as real processes).

Every test isolates itself: its own ``SATUPINTU_NAMESPACE`` and its own SQLite database (or,
with ``SATUPINTU_TEST_DATABASE=postgresql``, its own PostgreSQL database), so the suite can
run twice at once on one machine.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from support import (
    AMQP_URL,
    SANDBOX_AGENCIES,
    BrokerHandle,
    Stack,
    address,
    free_port,
    listening_socket,
    sandbox_env_name,
    sandbox_first,
    start_sandbox,
    wait_until,
)

REPO = Path(__file__).resolve().parents[1]


# --- store ---------------------------------------------------------------------------

def _database_url(tmp_path: Path) -> tuple[str, Any]:
    if os.environ.get("SATUPINTU_TEST_DATABASE", "sqlite") == "postgresql":
        import psycopg
        name = "sp_" + uuid.uuid4().hex[:12]
        admin = os.environ.get("SATUPINTU_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

        def drop() -> None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        return f"{base}/{name}", drop
    return f"sqlite:///{tmp_path / 'satupintu.db'}", lambda: None


@pytest.fixture
def database_url(tmp_path: Path):
    url, drop = _database_url(tmp_path)
    yield url
    drop()


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def sandbox_urls(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Ports picked for a sandbox that tests/scale starts itself (racy, see ``free_port``),
    put in ``env``; every other test uses ``sandbox``, which reads the ports the sandbox got."""
    urls = {agency: f"http://127.0.0.1:{free_port()}" for agency in SANDBOX_AGENCIES}
    for agency, url in urls.items():
        env[sandbox_env_name(agency)] = url
        monkeypatch.setenv(sandbox_env_name(agency), url)
    return urls


@pytest.fixture
def gateway_listener():
    """The listening socket this test's gateway serves on (``Stack`` hands it to ``serve``):
    bound to a port the kernel picked and held for the whole test."""
    sock = listening_socket()
    yield sock
    sock.close()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, database_url: str, namespace: str, gateway_listener,
        tmp_path: Path) -> dict[str, str]:
    """The environment of this test's stack, also applied to this process.

    ``SATUPINTU_BIND`` is the address of ``gateway_listener``; the ``sandbox`` fixture adds
    the agencies' URLs once they reported them."""
    values = {
        "SATUPINTU_DATABASE_URL": database_url,
        "SATUPINTU_NAMESPACE": namespace,
        "SATUPINTU_AMQP_URL": AMQP_URL,
        "SATUPINTU_CONFIG": str(REPO / "config"),
        "SATUPINTU_BIND": address(gateway_listener),
        "SATUPINTU_MUNICIPALITY_SECRET": "test-municipality-secret",
        "SATUPINTU_LOG_LEVEL": "WARNING",
    }
    values["SATUPINTU_STATE_DIR"] = str(tmp_path / "state")
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def config_dir(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A private copy of the demo catalog that a test may edit before the stack starts.

    Request it before ``stack``/``catalog`` so that they read the copy."""
    import shutil
    folder = tmp_path / "config"
    shutil.copytree(REPO / "config", folder)
    env["SATUPINTU_CONFIG"] = str(folder)
    monkeypatch.setenv("SATUPINTU_CONFIG", str(folder))
    return folder


@pytest.fixture
def settings(env: dict[str, str]):
    from core.settings import Settings
    return Settings.from_env()


@pytest.fixture
def engine(settings):
    from gateway.store import make_engine
    from gateway.store.migrations import upgrade
    engine = make_engine(settings.database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def catalog(settings, request: pytest.FixtureRequest):
    from gateway.catalog import load_catalog
    sandbox_first(request)
    return load_catalog(settings.config_dir)



# --- the gateway in-process -------------------------------------------------------------

@pytest.fixture
def app(settings, catalog, engine):
    from gateway.api import create_app
    app = create_app(settings, catalog=catalog, engine=engine)
    app.testing = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_key(engine):
    """Create an API client with the given scopes; returns its key."""
    from gateway import clients

    def make(*scopes: str, name: str | None = None, webhook_url: str | None = None) -> str:
        with engine.begin() as conn:
            _c, key = clients.create(conn, name or f"client-{uuid.uuid4().hex[:8]}", list(scopes or clients.SCOPES),
                                     webhook_url)
        return key
    return make


@pytest.fixture
def api_key(make_key) -> str:
    return make_key("submit", "read", "ops")


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def example() -> dict[str, Any]:
    import json
    return json.loads((REPO / "examples" / "business-startup.json").read_text())


# --- the real broker --------------------------------------------------------------------

@pytest.fixture
def broker(settings, catalog):
    """A real RabbitMQ channel with this test's namespace declared; deleted afterwards."""
    import pika

    from broker.topology import Names, declare_for, delete_for
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    names = Names(settings.namespace)
    declare_for(channel, names, catalog.agencies.values())
    yield BrokerHandle(connection=connection, channel=channel, names=names)
    try:
        if not channel.is_open:
            channel = connection.channel()
        delete_for(channel, names, catalog.agencies.values())
    finally:
        connection.close()


# --- real processes ---------------------------------------------------------------------

@pytest.fixture
def sandbox(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The sandbox agencies, calling back this test's gateway; their URLs put in ``env``."""
    box = start_sandbox(tmp_path / "sandbox.log", env=dict(os.environ, **env),
                        callback_url=f"http://{env['SATUPINTU_BIND']}/v1/agencies/municipality/callbacks",
                        callback_secret=env["SATUPINTU_MUNICIPALITY_SECRET"])
    for agency, url in box.urls.items():
        env[sandbox_env_name(agency)] = url
        monkeypatch.setenv(sandbox_env_name(agency), url)
    yield box
    box.stop()


@pytest.fixture
def stack(env: dict[str, str], engine, broker, sandbox, gateway_listener, tmp_path: Path):
    """Gateway (gunicorn), relay, tracker and one worker as real processes, on the sandbox."""
    logs = tmp_path / "logs"
    logs.mkdir()
    s = Stack(env=dict(os.environ, **env, SATUPINTU_WEB_WORKERS="2"), logs=logs, listener=gateway_listener)
    for role in ("serve", "relay", "tracker", "worker"):
        s.start(role)

    def up() -> bool:
        for proc in s.procs.values():
            if proc.process.poll() is not None:
                pytest.fail(f"{proc.name} exited early:\n{s.tail()}")
        try:
            return requests.get(s.url + "/readyz", timeout=1).ok
        except requests.RequestException:
            return False
    wait_until(up, 60, message="the gateway to be ready")
    yield s
    s.stop()


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = str(item.fspath)
        if "/integration/" in path:
            item.add_marker("integration")
        if "/e2e/" in path:
            item.add_marker("e2e")
    # ``postgresql_only`` tests run in the PostgreSQL pass; the SQLite pass leaves them out
    # (deselected, not skipped: a skip would mean something could not be checked).
    if os.environ.get("SATUPINTU_TEST_DATABASE", "sqlite") != "postgresql":
        kept = [item for item in items if item.get_closest_marker("postgresql_only") is None]
        if len(kept) != len(items):
            config.hook.pytest_deselected(items=[item for item in items if item not in kept])
            items[:] = kept

