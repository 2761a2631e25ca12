"""Shared fixtures, one shape for fake and real: ``settings``, ``engine``, ``catalog``, ``app``,
``client``, ``api_key``, ``broker`` (real RabbitMQ, own namespace), ``sandbox`` (real agency
servers) and ``stack`` (the roles as real processes).

Every test isolates itself: its own ``SATUPINTU_NAMESPACE`` and its own SQLite database (or,
with ``SATUPINTU_TEST_DATABASE=postgresql``, its own PostgreSQL database), so the suite can
run twice at once on one machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from support import free_port, wait_until

REPO = Path(__file__).resolve().parents[1]
SANDBOX_AGENCIES = ("company-registry", "municipality", "tax-office", "social-security")
AMQP_URL = os.environ.get("SATUPINTU_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def sandbox_env_name(agency: str) -> str:
    return f"SATUPINTU_SANDBOX_{agency.upper().replace('-', '_')}_URL"


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
def sandbox_urls() -> dict[str, str]:
    """Where the sandbox agencies would listen; ``sandbox`` starts them there."""
    return {agency: f"http://127.0.0.1:{free_port()}" for agency in SANDBOX_AGENCIES}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, database_url: str, namespace: str, sandbox_urls: dict[str, str],
        tmp_path: Path) -> dict[str, str]:
    """The environment of this test's stack, also applied to this process."""
    values = {
        "SATUPINTU_DATABASE_URL": database_url,
        "SATUPINTU_NAMESPACE": namespace,
        "SATUPINTU_AMQP_URL": AMQP_URL,
        "SATUPINTU_CONFIG": str(REPO / "config"),
        "SATUPINTU_BIND": f"127.0.0.1:{free_port()}",
        "SATUPINTU_MUNICIPALITY_SECRET": "test-municipality-secret",
        "SATUPINTU_LOG_LEVEL": "WARNING",
    }
    for agency, url in sandbox_urls.items():
        values[sandbox_env_name(agency)] = url
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


def edit_yaml(path: Path, change) -> None:  # noqa: ANN001
    """Load a catalog file, let ``change(document)`` edit it, write it back."""
    import yaml
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


@pytest.fixture
def settings(env: dict[str, str]):
    from gateway.settings import Settings
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
def catalog(settings):
    from gateway.catalog import load_catalog
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


@dataclass
class BrokerHandle:
    connection: Any
    channel: Any
    names: Any

    def depth(self, queue: str) -> int:
        return self.channel.queue_declare(queue, passive=True).method.message_count


# --- real processes ---------------------------------------------------------------------

@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None

    def start(self) -> Proc:
        self.process = subprocess.Popen(self.argv, env=self.env, stdout=self.log.open("ab"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@dataclass
class Sandbox:
    urls: dict[str, str]
    proc: Proc

    def stats(self, agency: str) -> dict[str, Any]:
        return requests.get(self.urls[agency] + "/_sandbox/stats", timeout=5).json()

    def faults(self, agency: str, **knobs: Any) -> dict[str, Any]:
        response = requests.post(self.urls[agency] + "/_sandbox/faults", json=knobs, timeout=5)
        response.raise_for_status()
        return response.json()

    def requests(self, agency: str, limit: int = 50) -> list[dict[str, Any]]:
        return requests.get(self.urls[agency] + f"/_sandbox/requests?limit={limit}", timeout=5).json()


def start_sandbox(urls: dict[str, str], env: dict[str, str], log: Path, *, callback_url: str = "",
                  decision_delay: float = 0.3, faults: str = "{}") -> Sandbox:
    ports = [f"--{agency}-port={url.rsplit(':', 1)[1]}" for agency, url in urls.items()]
    argv = [sys.executable, "-m", "sandbox", *ports, f"--decision-delay={decision_delay}",
            f"--callback-url={callback_url}", f"--callback-secret={env['SATUPINTU_MUNICIPALITY_SECRET']}",
            f"--faults={faults}"]
    proc = Proc("sandbox", argv, dict(os.environ, **env), log).start()
    sandbox = Sandbox(urls=urls, proc=proc)

    def up() -> bool:
        if proc.process.poll() is not None:
            pytest.fail(f"the sandbox exited: {log.read_text()[-2000:]}")
        try:
            return all(requests.get(u + "/_sandbox/stats", timeout=1).ok for u in urls.values())
        except requests.RequestException:
            return False
    wait_until(up, 30, message="the sandbox agencies")
    return sandbox


@pytest.fixture
def sandbox(env: dict[str, str], sandbox_urls: dict[str, str], tmp_path: Path):
    bind = env["SATUPINTU_BIND"]
    box = start_sandbox(sandbox_urls, env, tmp_path / "sandbox.log",
                        callback_url=f"http://{bind}/v1/agencies/municipality/callbacks")
    yield box
    box.proc.stop()


@dataclass
class Stack:
    """The roles as real processes (``satupintu serve|relay|tracker|worker``)."""

    env: dict[str, str]
    logs: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.env['SATUPINTU_BIND']}"

    def start(self, role: str, *args: str, name: str | None = None) -> Proc:
        name = name or role
        argv = [sys.executable, "-m", "gateway.cli", role, *args]
        proc = Proc(name, argv, self.env, self.logs / f"{name}.log").start()
        self.procs[name] = proc
        return proc

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()

    def tail(self, lines: int = 30) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


@pytest.fixture
def stack(env: dict[str, str], engine, broker, sandbox, tmp_path: Path):
    """Gateway (gunicorn), relay, tracker and one worker as real processes, on the sandbox."""
    logs = tmp_path / "logs"
    logs.mkdir()
    s = Stack(env=dict(os.environ, **env, SATUPINTU_WEB_WORKERS="2"), logs=logs)
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


def pytest_collection_modifyitems(items):
    for item in items:
        path = str(item.fspath)
        if "/integration/" in path:
            item.add_marker("integration")
        if "/e2e/" in path:
            item.add_marker("e2e")

