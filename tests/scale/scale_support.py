"""Helpers of the scale tests: a PostgreSQL database of one's own, a fleet of role processes,
the sandbox, bulk submission, and a RabbitMQ cluster started and stopped by the test.

Imported as ``scale_support`` (no ``conftest.py`` here, so that ``from conftest import``
in other folders keeps finding ``tests/conftest.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from rabbit import RABBITMQCTL, Node, RabbitCluster, rabbitmq_problem  # noqa: F401 - re-exported
from support import wait_until

PG_ADMIN = os.environ.get("SATUPINTU_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
SANDBOX_AGENCIES = ("company-registry", "municipality", "tax-office", "social-security")
TERMINAL = {"completed", "rejected", "failed", "cancelled"}


# --- PostgreSQL --------------------------------------------------------------------------

def postgres_problem() -> str | None:
    """Why no PostgreSQL can be used here, or None when it can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL answers at {PG_ADMIN} (SATUPINTU_TEST_PG_ADMIN): {exc}"
    return None


def require_postgres() -> None:
    """Skip without a PostgreSQL; fail instead when CI says one must be there."""
    problem = postgres_problem()
    if problem is None:
        return
    if os.environ.get("SATUPINTU_REQUIRE_POSTGRESQL") == "1":
        pytest.fail(problem)
    pytest.skip(problem)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the local server; its SQLAlchemy URL; dropped afterwards."""
    import psycopg
    require_postgres()
    name = "sp_scale_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- processes ---------------------------------------------------------------------------

@dataclass
class Fleet:
    """Named processes, each in its own session with its own log file."""

    logs: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self.procs[name]

    def role(self, name: str, role: str, env: dict[str, str], *args: str) -> subprocess.Popen:
        return self.start(name, [sys.executable, "-m", "gateway.cli", role, *args], env)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}:\n{self.tail()}")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        for name in self.procs:
            self.stop(name)

    def tail(self, lines: int = 25) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


def start_sandbox(fleet: Fleet, urls: dict[str, str], env: dict[str, str], *, callback_url: str,
                  decision_delay: float = 0.2) -> None:
    ports = [f"--{agency}-port={url.rsplit(':', 1)[1]}" for agency, url in urls.items()]
    fleet.start("sandbox", [sys.executable, "-m", "sandbox", *ports, f"--decision-delay={decision_delay}",
                            f"--callback-url={callback_url}",
                            f"--callback-secret={env['SATUPINTU_MUNICIPALITY_SECRET']}"], env)

    def up() -> bool:
        fleet.check_alive()
        try:
            return all(requests.get(u + "/_sandbox/stats", timeout=1).ok for u in urls.values())
        except requests.RequestException:
            return False
    wait_until(up, 30, message="the sandbox agencies")


def wait_ready(fleet: Fleet, gateway_urls: list[str], timeout: float = 60) -> None:
    def up() -> bool:
        fleet.check_alive()
        try:
            return all(requests.get(u + "/readyz", timeout=1).ok for u in gateway_urls)
        except requests.RequestException:
            return False
    wait_until(up, timeout, message="every gateway to be ready")


def sandbox_stats(urls: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {agency: requests.get(url + "/_sandbox/stats", timeout=5).json() for agency, url in urls.items()}


# --- bundles -----------------------------------------------------------------------------

def bundle(example: dict[str, Any], i: int, tag: str = "") -> dict[str, Any]:
    import copy
    body = copy.deepcopy(example)
    body["data"]["company"]["name"] = f"PT Skala {tag}{i:05d}"
    body["reference"] = f"SCALE-{tag}{i:05d}"
    return body


def submit_all(gateway_urls: list[str], key: str, bodies: list[dict[str, Any]], threads: int = 12) -> list[str]:
    """POST every body (round robin over the gateways, ``threads`` at a time); the ids, in order.

    A connection error, or a 429 of the per-client rate limit (after its ``Retry-After``),
    is retried with the same ``Idempotency-Key``, as a front office should: it cannot file twice."""
    def one(i: int) -> str:
        idem = uuid.uuid4().hex
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idem}
        for attempt in range(10):
            url = gateway_urls[(i + attempt) % len(gateway_urls)]
            try:
                response = requests.post(url + "/v1/applications", json=bodies[i], headers=headers, timeout=30)
            except requests.ConnectionError:
                time.sleep(0.5)
                continue
            if response.status_code == 429:
                time.sleep(float(response.headers["Retry-After"]))
                continue
            assert response.status_code == 202, response.text
            return response.json()["id"]
        pytest.fail(f"no gateway took bundle {i}")
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(len(bodies))))


def undecided(engine, ids: list[str]) -> int:
    """How many of ``ids`` are not decided yet (read straight from the store)."""
    from sqlalchemy import func, select

    from gateway.store import tables as t
    with engine.connect() as conn:
        decided = conn.execute(select(func.count()).select_from(t.applications).where(
            t.applications.c.id.in_(ids), t.applications.c.status.in_(TERMINAL))).scalar()
    return len(ids) - decided


def where_undecided(engine, ids: list[str], limit: int = 10) -> str:
    """Where the undecided ones of ``ids`` stand: their requests' statuses and attempts, their
    last events, and the outbox rows not yet sent -- what a timed-out wait prints."""
    from sqlalchemy import func, select

    from gateway.store import tables as t
    lines = []
    with engine.connect() as conn:
        stuck = [r.id for r in conn.execute(select(t.applications.c.id, t.applications.c.status).where(
            t.applications.c.id.in_(ids), t.applications.c.status.not_in(TERMINAL)))]
        unsent = conn.execute(select(func.count()).select_from(t.outbox).where(t.outbox.c.sent_at.is_(None))).scalar()
        lines.append(f"{len(stuck)} undecided; {unsent} outbox rows unsent")
        for app_id in stuck[:limit]:
            steps = ", ".join(f"{r.step}={r.status}/{r.attempts}" for r in conn.execute(
                select(t.requests.c.step, t.requests.c.status, t.requests.c.attempts)
                .where(t.requests.c.application_id == app_id).order_by(t.requests.c.step)))
            last = "; ".join(f"{r.type}:{r.step or ''}:{r.status}@{r.recorded_at:%H:%M:%S}" for r in conn.execute(
                select(t.events.c.type, t.events.c.step, t.events.c.status, t.events.c.recorded_at)
                .where(t.events.c.application_id == app_id).order_by(t.events.c.id.desc()).limit(4)))
            lines.append(f"  {app_id}: {steps} | last events {last}")
    return "\n".join(lines)


def step_outcomes_missing(engine, ids: list[str]) -> list[str]:
    """Problems with the histories: each approved step must have its status events recorded."""
    from sqlalchemy import select

    from gateway.store import tables as t
    problems = []
    with engine.connect() as conn:
        approved = {(r.application_id, r.id) for r in conn.execute(
            select(t.requests.c.application_id, t.requests.c.id).where(
                t.requests.c.application_id.in_(ids), t.requests.c.status == "approved"))}
        seen = {(r.application_id, r.request_id) for r in conn.execute(
            select(t.events.c.application_id, t.events.c.request_id).where(
                t.events.c.application_id.in_(ids), t.events.c.status == "approved"))}
        completed = {r.application_id for r in conn.execute(
            select(t.events.c.application_id).where(t.events.c.application_id.in_(ids),
                                                    t.events.c.type == "application",
                                                    t.events.c.status == "completed"))}
    for pair in sorted(approved - seen):
        problems.append(f"application {pair[0]}: no 'approved' event for request {pair[1]}")
    for app_id in sorted(set(ids) - completed):
        problems.append(f"application {app_id}: no 'completed' event")
    return problems


# --- a RabbitMQ cluster of our own ----------------------------------------------------------

def delete_namespace(urls: list[str], namespace: str, catalog) -> None:
    """Delete a namespace's queues and exchanges with a fresh connection (a long test's
    idle connection would have missed its heartbeats by now)."""
    import pika

    from broker.topology import Names, delete_for
    for url in urls:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(url))
        except Exception:  # noqa: BLE001 - try the next node
            continue
        try:
            delete_for(connection.channel(), Names(namespace), catalog.agencies.values())
        finally:
            if connection.is_open:
                connection.close()
        return
