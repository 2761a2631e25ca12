"""A full Satu Pintu stack as real processes, with its own namespace and its own store.

The same roles as ``satupintu run`` (gateway under gunicorn, relay, tracker, workers) plus
the sandbox agencies, each started as ``python -m gateway.cli ROLE`` exactly as the
end-to-end tests do.  The stack owns a fresh SQLite file (or a PostgreSQL database it
creates and drops), a RabbitMQ namespace whose queues it deletes afterwards, and a work
folder with one log per process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from gateway.supervisor import wait_http

REPO = Path(__file__).resolve().parents[1]
BENCH_CATALOG = Path(__file__).resolve().parent / "catalog"
DEMO_CATALOG = REPO / "config"
DEMO_AGENCIES = ("company-registry", "municipality", "tax-office", "social-security")
BENCH_AGENCIES = ("registry-a", "registry-b", "registry-c")
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"


def free_port() -> int:
    """A port nobody listened on a moment ago (racy: the benchmark's own machine only).
    The tests never do this: their servers bind port 0 and report it."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StackError(RuntimeError):
    """Raised when a process of the stack does not come up or dies during a run."""


@dataclass
class Process:
    role: str
    name: str
    popen: subprocess.Popen

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        except ProcessLookupError:
            pass


@dataclass
class StackConfig:
    catalog: Path = BENCH_CATALOG
    database_url: str | None = None  # None: a fresh SQLite file; postgresql://... an admin URL
    amqp_url: str = DEFAULT_AMQP
    workers: int = 1
    web_workers: int | None = None  # None: the gateway's own default
    web_threads: int | None = None
    sandbox_faults: str = "{}"
    decision_delay: float = 0.05
    # The per-client API rate limit (SATUPINTU_RATE_LIMIT): off, since the bench is one client
    # doing the work of many front offices; "100:200" measures with the limiter's bookkeeping.
    rate_limit: str = "0"
    extra_env: dict[str, str] = field(default_factory=dict)
    keep: bool = False  # keep the work folder (logs, SQLite file) afterwards


class Stack:
    """Set up with ``prepare()``, start roles with ``start(...)``, always ``close()``."""

    def __init__(self, config: StackConfig):
        self.config = config
        self.namespace = "bench" + uuid.uuid4().hex[:10]
        self.workdir = Path(tempfile.mkdtemp(prefix="satupintu-bench-"))
        self.processes: list[Process] = []
        self.bind = f"127.0.0.1:{free_port()}"
        self._drop_database = None
        self.database_url = self._make_database()
        self.engine = None
        self.catalog = None
        self.api_key = ""
        self.sandbox_urls: dict[str, str] = {}
        self.registry_urls: dict[str, str] = {}
        self.env = self._environment()

    @property
    def url(self) -> str:
        return f"http://{self.bind}"

    # --- the store ----------------------------------------------------------------------

    def _make_database(self) -> str:
        admin = self.config.database_url
        if not admin:
            return f"sqlite:///{self.workdir / 'satupintu.db'}"
        if not admin.startswith(("postgresql://", "postgresql+psycopg://")):
            return admin  # another engine: used as is, never dropped
        import psycopg
        plain = admin.replace("postgresql+psycopg://", "postgresql://")
        name = f"sp_{self.namespace}"
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

        def drop() -> None:
            with psycopg.connect(plain, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._drop_database = drop
        return f"{plain.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://')}/{name}"

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SATUPINTU_")}
        env.update({
            "SATUPINTU_DATABASE_URL": self.database_url,
            "SATUPINTU_AMQP_URL": self.config.amqp_url,
            "SATUPINTU_CONFIG": str(self.config.catalog),
            "SATUPINTU_NAMESPACE": self.namespace,
            "SATUPINTU_BIND": self.bind,
            "SATUPINTU_MUNICIPALITY_SECRET": "bench-" + uuid.uuid4().hex,
            "SATUPINTU_LOG_LEVEL": "WARNING",
            "SATUPINTU_RATE_LIMIT": self.config.rate_limit,
            "PYTHONPATH": str(REPO),
        })
        if self.config.web_workers:
            env["SATUPINTU_WEB_WORKERS"] = str(self.config.web_workers)
        if self.config.web_threads:
            env["SATUPINTU_WEB_THREADS"] = str(self.config.web_threads)
        ports = {agency: free_port() for agency in DEMO_AGENCIES}
        self.sandbox_urls = {agency: f"http://127.0.0.1:{port}" for agency, port in ports.items()}
        for agency, url in self.sandbox_urls.items():
            env[f"SATUPINTU_SANDBOX_{agency.upper().replace('-', '_')}_URL"] = url
        # The bench registries are three agencies, so three servers: the first is the sandbox's
        # own company registry, the others the company registry of a sandbox each (decision 38).
        # (Only for the bench catalog: the demo catalog's agencies are the sandbox's own.)
        spread = Path(self.config.catalog) == BENCH_CATALOG
        self.registry_urls = {agency: self.sandbox_urls["company-registry"] if i == 0 or not spread else
                              f"http://127.0.0.1:{free_port()}" for i, agency in enumerate(BENCH_AGENCIES)}
        for agency, url in self.registry_urls.items():
            env[f"SATUPINTU_BENCH_{agency.upper().replace('-', '_')}_URL"] = url
        env.update(self.config.extra_env)
        return env

    def prepare(self) -> None:
        """Migrate the store, load the catalog, create an API client, declare the topology."""
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("SATUPINTU_")})
        from gateway import clients
        from gateway.catalog import load_catalog
        from gateway.store import make_engine
        from gateway.store.migrations import upgrade
        self.engine = make_engine(self.database_url)
        upgrade(self.engine)
        self.catalog = load_catalog(self.config.catalog)
        with self.engine.begin() as conn:
            _client, self.api_key = clients.create(conn, "bench", list(clients.SCOPES))
        from broker.topology import declare_for
        self._broker(lambda channel, names: declare_for(channel, names, self.catalog.agencies.values()))

    def _broker(self, work) -> None:
        import pika

        from broker.topology import Names
        connection = pika.BlockingConnection(pika.URLParameters(self.config.amqp_url))
        try:
            work(connection.channel(), Names(self.namespace))
        finally:
            connection.close()

    # --- processes ----------------------------------------------------------------------

    def _spawn(self, role: str, name: str, argv: list[str]) -> Process:
        log = (self.workdir / f"{name}.log").open("ab")
        popen = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, cwd=REPO)
        process = Process(role, name, popen)
        self.processes.append(process)
        return process

    def start_sandbox(self) -> None:
        ports = [f"--{agency}-port={url.rsplit(':', 1)[1]}" for agency, url in self.sandbox_urls.items()]
        callback = f"{self.url}/v1/agencies/municipality/callbacks"
        self._spawn("sandbox", "sandbox", [
            sys.executable, "-m", "sandbox", *ports, f"--decision-delay={self.config.decision_delay}",
            f"--callback-url={callback}", f"--callback-secret={self.env['SATUPINTU_MUNICIPALITY_SECRET']}",
            f"--faults={self.config.sandbox_faults}"])
        others = [url for url in self.registry_urls.values() if url not in self.sandbox_urls.values()]
        for i, url in enumerate(others):
            ports = [f"--{agency}-port={url.rsplit(':', 1)[1] if agency == 'company-registry' else 0}"
                     for agency in self.sandbox_urls]
            self._spawn("sandbox", f"sandbox-{i + 2}", [sys.executable, "-m", "sandbox", *ports,
                                                         f"--faults={self.config.sandbox_faults}"])
        for url in [*self.sandbox_urls.values(), *others]:
            if not wait_http(url + "/_sandbox/health", 30, alive=self.alive):
                raise StackError(f"the sandbox did not come up:\n{self.tail()}")

    def start(self, *roles: str) -> None:
        """Start ``roles`` (serve, relay, tracker, worker); waits for the gateway when it is one."""
        for role in roles:
            if role == "worker":
                for i in range(self.config.workers):
                    self._spawn("worker", f"worker-{i + 1}", [sys.executable, "-m", "gateway.cli", "worker"])
            else:
                name = "gateway" if role == "serve" else role
                self._spawn(name, name, [sys.executable, "-m", "gateway.cli", role])
        if "serve" in roles and not wait_http(self.url + "/readyz", 60, alive=self.alive):
            raise StackError(f"the gateway did not become ready:\n{self.tail()}")

    def alive(self) -> bool:
        dead = [p for p in self.processes if p.popen.poll() is not None]
        if dead:
            raise StackError(f"{dead[0].name} exited with {dead[0].popen.returncode}:\n{self.tail()}")
        return True

    def roots(self) -> dict[str, list[int]]:
        """Process ids by role, for the sampler."""
        out: dict[str, list[int]] = {}
        for p in self.processes:
            out.setdefault(p.role, []).append(p.popen.pid)
        return out

    def stop_role(self, role: str) -> None:
        for p in [p for p in self.processes if p.role == role]:
            p.stop()
            self.processes.remove(p)

    def tail(self, lines: int = 15) -> str:
        out = []
        for path in sorted(self.workdir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    def close(self) -> None:
        """Stop every process, delete the namespace's queues, drop the database, remove files."""
        for p in reversed(self.processes):
            p.stop()
        self.processes.clear()
        if self.catalog is not None:
            from broker.topology import delete_for
            for attempt in range(6):  # the broker may be briefly away (restarted by someone's test)
                try:
                    self._broker(lambda channel, names: delete_for(channel, names, self.catalog.agencies.values()))
                    break
                except Exception as exc:  # noqa: BLE001 - report, and go on cleaning up
                    if attempt == 5:
                        print(f"bench: could not delete namespace {self.namespace}: {exc!r}", file=sys.stderr)
                    else:
                        time.sleep(2 * (attempt + 1))
        if self.engine is not None:
            self.engine.dispose()
        if self._drop_database:
            self._drop_database()
        if self.config.keep:
            print(f"bench: kept {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
