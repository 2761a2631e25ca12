"""Fault injection: 1,000 bundles under load while everything that can fail, fails.

Real processes on a RabbitMQ node of the suite's own (so stopping it disturbs no other
run on the machine) and the sandbox agencies.  While the bundles are submitted and
processed:

(a) the gateway, the relay, the tracker and both workers are each SIGKILLed at random
    moments and restarted, each at least 3 times;
(b) RabbitMQ (the suite's own node) is stopped and started once (``rabbitmqctl stop_app`` / ``start_app``);
(c) the municipality is down for 30 s (sandbox ``outage_seconds``);
(d) 5% of the calls to every agency fail transiently (sandbox ``failure_rate``).

Then every accepted bundle reaches a terminal state, none is lost, no agency received a
request twice, every failed bundle is among the dead letters, and replaying them (the
agency is back) completes them.  The figures are printed; docs/reliability.md records them.

The load generator retries a submission the gateway did not answer (it may be dead) with
the same Idempotency-Key, and counts the bundles it got a 202 for.  The random schedule's
seed is printed (set ``SATUPINTU_FAULTS_SEED`` to replay a schedule).
"""

from __future__ import annotations

import copy
import json
import os
import random
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from catalogs import reliability_catalog
from rabbit import RabbitCluster, rabbitmq_problem
from sqlalchemy import func, select
from support import BrokerHandle, Stack, wait_until

BUNDLES = int(os.environ.get("SATUPINTU_FAULTS_BUNDLES", "1000"))
SUBMIT_SECONDS = 45.0  # the submissions are spread over this long, so the faults hit them
CHAOS_SECONDS = 60.0  # the kills happen within this long
KILLS_PER_ROLE = 3
AGENCIES = ("company-registry", "municipality", "tax-office", "social-security")
OUTAGE_AGENCY = "municipality"
# Each agency is consumed by exactly one worker process, so two copies of one request
# (a relay that died after publishing, a redelivery) meet in one process, which calls the
# agency for one request at a time and looks it up before filing it again.
WORKERS = {"worker-a": ("company-registry", "tax-office"), "worker-b": ("municipality", "social-security")}
ROLES = ("serve", "relay", "tracker", *WORKERS)


@pytest.fixture
def private_broker(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """A RabbitMQ node of this test's own: the suite stops and starts it, and nothing else
    on the machine (another test run, a demo) notices."""
    problem = rabbitmq_problem()
    if problem:
        pytest.skip(f"no private RabbitMQ node: {problem}")
    node_cluster = RabbitCluster(tmp_path / "rabbit", size=1)
    node_cluster.start()
    url = node_cluster.urls[0]
    env["SATUPINTU_AMQP_URL"] = url
    monkeypatch.setenv("SATUPINTU_AMQP_URL", url)
    yield node_cluster
    node_cluster.stop()


@pytest.fixture
def catalog(private_broker, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    """The demo catalog with seconds-long retry tiers; the stack's processes read it too."""
    from gateway.catalog import load_catalog
    folder = reliability_catalog(
        tmp_path / "config",
        retry={"max_attempts": 4, "delays": [0.5, 1, 2]},
        breaker={"failure_threshold": 5, "reset_after": 2},
        # The agency taken down for 30 s gives up sooner, so some requests do fail and are
        # replayed: the suite proves the dead-letter path, not only the retry path.
        per_agency={"municipality": {"retry": {"max_attempts": 2, "delays": [1]}}},
    )
    env["SATUPINTU_CONFIG"] = str(folder)
    env["SATUPINTU_STATE_DIR"] = str(tmp_path / "state")
    monkeypatch.setenv("SATUPINTU_CONFIG", str(folder))
    monkeypatch.setenv("SATUPINTU_STATE_DIR", str(tmp_path / "state"))
    assert os.environ["SATUPINTU_CONFIG"] == str(folder)
    return load_catalog(folder)


@pytest.fixture
def broker(settings, catalog):  # noqa: ANN001, ANN201
    """This test's namespace on the real RabbitMQ, deleted afterwards over a fresh connection
    (the suite restarts RabbitMQ, which closes every connection opened before)."""
    import pika

    from broker.topology import Names, declare_for, delete_for
    names = Names(settings.namespace)
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_urls[0]))
    declare_for(connection.channel(), names, catalog.agencies.values())
    connection.close()
    yield BrokerHandle(connection=None, channel=None, names=names)
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_urls[0]))
    try:
        delete_for(connection.channel(), names, catalog.agencies.values())
    finally:
        connection.close()




class Chaos:
    """The stack's processes, a random schedule of kills, and a watch that restarts the dead."""

    def __init__(self, stack: Stack, rng: random.Random, rabbit: RabbitCluster):
        self.stack = stack
        self.rabbit = rabbit
        self.rng = rng
        self.kills = dict.fromkeys(ROLES, 0)
        self.unexpected_exits: dict[str, int] = dict.fromkeys(ROLES, 0)
        self.killed: set[str] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.broker_down = False

    def start(self, role: str) -> None:
        if role in WORKERS:
            args = [a for agency in WORKERS[role] for a in ("--agency", agency)]
            self.stack.start("worker", *args, name=role)
        else:
            self.stack.start(role)

    def kill(self, role: str) -> None:
        with self.lock:
            self.killed.add(role)
            self.stack.procs[role].kill()
            self.kills[role] += 1

    def revive(self, role: str) -> None:
        with self.lock:
            self.start(role)
            self.killed.discard(role)

    def watch(self) -> None:
        """Restart a process that died without being killed by us (and count it)."""
        while not self.stopping.wait(0.5):
            with self.lock:
                for role in ROLES:
                    proc = self.stack.procs[role]
                    if role not in self.killed and proc.process.poll() is not None:
                        self.unexpected_exits[role] += 1
                        self.start(role)

    def schedule(self, outage_at: float, broker_at: float) -> list[tuple[float, str, str]]:
        """(second, action, target): kills spread over the chaos window, one per segment per role."""
        events = [(outage_at, "outage", OUTAGE_AGENCY), (broker_at, "broker", "")]
        segment = (CHAOS_SECONDS - 4) / KILLS_PER_ROLE
        for role in ROLES:
            for k in range(KILLS_PER_ROLE):
                moment = 2 + k * segment + self.rng.uniform(0, segment - 3)
                events.append((moment, "kill", role))
        return sorted(events)

    def rabbitmqctl(self, command: str) -> None:
        """``rabbitmqctl stop_app|start_app`` on the suite's own node."""
        self.rabbit.ctl(self.rabbit.nodes[0], "-q", command, timeout=60)

    def run(self, t0: float, events: list[tuple[float, str, str]], sandbox) -> None:  # noqa: ANN001
        for moment, action, target in events:
            delay = t0 + moment - time.monotonic()
            if delay > 0 and self.stopping.wait(delay):
                return
            if action == "outage":
                sandbox.faults(target, outage_seconds=30)
            elif action == "broker":
                if os.environ.get("SATUPINTU_FAULTS_BROKER_RESTART", "1") == "0":
                    continue  # while developing on a shared machine (see docs/reliability.md)
                self.broker_down = True
                try:
                    self.rabbitmqctl("stop_app")
                    time.sleep(5)
                finally:
                    self.rabbitmqctl("start_app")
                    self.broker_down = False
            else:
                self.kill(target)
                # Revive it a moment later, in the background, so kills can overlap.
                threading.Timer(self.rng.uniform(0.3, 2.0), self.revive, args=(target,)).start()


class Load:
    """Submits the bundles from several threads, retrying each with its own Idempotency-Key."""

    def __init__(self, url: str, key: str, example: dict, count: int):
        self.url, self.key, self.example, self.count = url, key, example, count
        self.accepted: dict[int, str] = {}
        self.retries = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.next = 0

    def _take(self) -> int | None:
        with self.lock:
            if self.next >= self.count:
                return None
            self.next += 1
            return self.next - 1

    def _submit(self, i: int) -> None:
        body = copy.deepcopy(self.example)
        body["data"]["company"]["name"] = f"PT Tahan Banting {i:04d}"
        body["reference"] = f"faults-{i:04d}"
        headers = {"Authorization": f"Bearer {self.key}", "Idempotency-Key": uuid.uuid4().hex}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                response = requests.post(self.url + "/v1/applications", json=body, headers=headers, timeout=15)
            except requests.RequestException:
                response = None
            if response is not None and response.status_code == 202:
                with self.lock:
                    self.accepted[i] = response.json()["id"]
                return
            if response is not None and response.status_code < 500 and response.status_code != 429:
                with self.lock:
                    self.errors.append(f"{i}: {response.status_code} {response.text[:300]}")
                return
            with self.lock:
                self.retries += 1
            time.sleep(0.3)  # the gateway is down or restarting: same key again
        with self.lock:
            self.errors.append(f"{i}: no 202 within 120 s")

    def worker(self, t0: float) -> None:
        while (i := self._take()) is not None:
            delay = t0 + i * SUBMIT_SECONDS / self.count - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._submit(i)


def _statuses(engine, ids: list[str]) -> dict[str, str]:  # noqa: ANN001
    from gateway.store import tables as t
    with engine.connect().execution_options(readonly=True) as conn:
        rows = conn.execute(select(t.applications.c.id, t.applications.c.status)
                            .where(t.applications.c.id.in_(ids))).all()
    return dict(rows)


@pytest.mark.timeout(600)
def test_a_thousand_bundles_survive_kills_a_broker_restart_an_outage_and_failures(
        env, private_broker, engine, broker, sandbox, catalog, api_key, example, gateway_listener, tmp_path: Path):  # noqa: ANN001
    from gateway import dead_letters
    from gateway.store import tables as t

    seed = int(os.environ.get("SATUPINTU_FAULTS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"\nfault schedule seed: {seed}")
    logs = tmp_path / "logs"
    logs.mkdir()
    stack = Stack(env=dict(os.environ, **env, SATUPINTU_WEB_WORKERS="2"), logs=logs, listener=gateway_listener)
    chaos = Chaos(stack, rng, private_broker)
    for role in ROLES:
        chaos.start(role)
    wait_until(lambda: _ready(stack.url), 60, message="the gateway to be ready")
    for agency in AGENCIES:
        sandbox.faults(agency, failure_rate=0.05)

    started = time.monotonic()
    events = chaos.schedule(outage_at=rng.uniform(6, 12), broker_at=rng.uniform(18, 32))
    chaos_thread = threading.Thread(target=chaos.run, args=(started, events, sandbox), daemon=True)
    watch_thread = threading.Thread(target=chaos.watch, daemon=True)
    load = Load(stack.url, api_key, example, BUNDLES)
    submitters = [threading.Thread(target=load.worker, args=(started,), daemon=True) for _ in range(8)]
    try:
        chaos_thread.start()
        watch_thread.start()
        for thread in submitters:
            thread.start()
        for thread in submitters:
            thread.join()
        chaos_thread.join()
        assert not load.errors, load.errors[:10]
        ids = list(load.accepted.values())
        assert len(ids) == BUNDLES

        # (1) every accepted bundle reaches a terminal state.
        def all_terminal() -> dict[str, str] | None:
            found = _statuses(engine, ids)
            return found if len(found) == len(ids) and "in_progress" not in found.values() else None
        final = wait_until(all_terminal, 300, interval=2, message="every bundle to be decided")
        first_pass = {s: list(final.values()).count(s) for s in set(final.values())}

        # (2) none lost, none doubled: exactly the accepted bundles exist.
        with engine.connect().execution_options(readonly=True) as conn:
            stored = conn.execute(select(func.count()).select_from(t.applications)).scalar()
        assert stored == len(ids) == len(set(ids))
        assert set(final.values()) <= {"completed", "failed"}, first_pass

        # (3) every failed bundle is among the dead letters.
        failed_ids = [a for a, s in final.items() if s == "failed"]
        with engine.connect().execution_options(readonly=True) as conn:
            failed_requests = conn.execute(select(t.requests.c.id).where(
                t.requests.c.application_id.in_(failed_ids), t.requests.c.status == "failed")).scalars().all()
        open_dead = {d["request_id"] for d in dead_letters.list_open(engine, limit=100_000)}
        assert set(failed_requests) <= open_dead
        assert bool(failed_ids) == bool(failed_requests)

        # (4) the agency is back: replaying the dead letters completes them.
        wait_until(lambda: _outage_over(sandbox.urls[OUTAGE_AGENCY]), 60, message="the outage to end")
        replayed = 0
        for _round in range(5):  # a replayed request can meet the 5% failures again
            if not dead_letters.list_open(engine, limit=1):
                break
            replayed += len(dead_letters.replay(engine, catalog, cause="fault suite replay"))
            final = wait_until(all_terminal, 180, interval=2, message="the replayed bundles to be decided")
        assert set(final.values()) == {"completed"}, {s: list(final.values()).count(s) for s in set(final.values())}

        # (5) no agency received any request twice.
        stats = {agency: sandbox.stats(agency) for agency in AGENCIES}
        duplicates = sum(s["duplicates"] for s in stats.values())
        elapsed = time.monotonic() - started
        figures = {
            "seed": seed, "submitted": len(ids), "submit_retries": load.retries,
            "completed_first_pass": first_pass.get("completed", 0), "failed": first_pass.get("failed", 0),
            "dead_letters_replayed": replayed, "completed": list(final.values()).count("completed"),
            "lost": BUNDLES - len(ids), "duplicates": duplicates, "elapsed_s": round(elapsed, 1),
            "kills": chaos.kills, "unexpected_exits": chaos.unexpected_exits,
            "agencies": {a: {k: s.get(k) for k in ("requests", "unique_request_ids", "duplicates",
                                                   "failed_injected", "retries_after_failure", "callbacks_sent",
                                                   "callbacks_failed", "callbacks_given_up") if k in s}
                         for a, s in stats.items()},
        }
        print("fault suite figures: " + json.dumps(figures, indent=2))
        (tmp_path / "figures.json").write_text(json.dumps(figures, indent=2))
        assert all(count >= KILLS_PER_ROLE for count in chaos.kills.values()), chaos.kills
        assert duplicates == 0, stats
    except BaseException:
        print(stack.tail(40), file=sys.stderr)
        raise
    finally:
        chaos.stopping.set()
        if chaos.broker_down:
            chaos.rabbitmqctl("start_app")
        stack.stop()


def _ready(url: str) -> bool:
    try:
        return requests.get(url + "/readyz", timeout=1).ok
    except requests.RequestException:
        return False


def _outage_over(url: str) -> bool:
    return requests.get(url + "/_sandbox/faults", timeout=5).json().get("outage_remaining", 0) <= 0
