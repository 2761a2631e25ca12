"""A three-node RabbitMQ cluster of the test's own; one node dies mid-run; nothing is lost.

The test starts three ``rabbitmq-server`` nodes on this machine (``sp-<random>-N@localhost``,
their own AMQP and distribution ports, data, logs, config and Erlang cookie under the
test's tmp folder), joins them with ``rabbitmqctl join_cluster``, and runs the stack with
``SATUPINTU_AMQP_URL`` listing all three.  Every queue is a quorum queue, so each has a
replica on every node.  Half-way through a batch of bundles it kills (SIGKILL) the node
that leads most of the namespace's queues, submits the rest, and checks that every bundle
completes, that every agency received every request (no message lost; a redelivered one
may reach an agency twice with the same request id, which the agency answers from its
ledger), that every history holds every step's outcome, and that each role reconnected
to a surviving node.

The default node on 5672 is never contacted (the processes share only the machine's
``epmd``).  Marked ``cluster``: exclude with ``-m "not cluster"``.  Skipped, with the
reason, where ``rabbitmq-server`` is not installed.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest
import requests
from scale_support import (
    SANDBOX_AGENCIES,
    Fleet,
    RabbitCluster,
    bundle,
    rabbitmq_problem,
    sandbox_stats,
    start_sandbox,
    step_outcomes_missing,
    submit_all,
    undecided,
    wait_ready,
    where_undecided,
)
from sqlalchemy import func, select
from support import free_port, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.scale, pytest.mark.timeout(300)]

BUNDLES = 120  # half before the node dies, half after


@pytest.fixture
def cluster(tmp_path):
    problem = rabbitmq_problem()
    if problem:
        pytest.skip(f"cannot start a RabbitMQ cluster here: {problem}")
    cluster = RabbitCluster(tmp_path / "rabbit")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def fleet(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(logs)
    yield fleet
    fleet.stop_all()


def queue_leaders(cluster: RabbitCluster, namespace: str) -> dict[str, str]:
    """The namespace's quorum queues and the node leading each."""
    for node in cluster.nodes:
        if node.process and node.process.poll() is None:
            rows = json.loads(cluster.ctl(node, "list_queues", "name", "leader", "--formatter", "json", "-q"))
            return {r["name"]: r["leader"] for r in rows if r["name"].startswith(namespace + ".")}
    raise AssertionError("no node is running")


def connection_names(cluster: RabbitCluster, node) -> list[str]:
    rows = json.loads(cluster.ctl(node, "list_connections", "client_properties", "--formatter", "json", "-q"))
    names = []
    for row in rows:
        properties = row.get("client_properties") or []
        if isinstance(properties, dict):
            names.append(str(properties.get("connection_name", "")))
        else:  # a list of [key, type, value] triples
            names += [str(p[2]) for p in properties if isinstance(p, list) and p and p[0] == "connection_name"]
    return names


def test_bundles_survive_the_loss_of_one_node_of_a_three_node_cluster(
        cluster, env, engine, sandbox_urls, make_key, example, fleet):
    from gateway.store import tables as t

    assert len(cluster.running_nodes(cluster.nodes[0])) == 3
    bind = f"127.0.0.1:{free_port()}"
    gateway = f"http://{bind}"
    base = {**os.environ, **env, "SATUPINTU_AMQP_URL": ",".join(cluster.urls), "SATUPINTU_BIND": bind,
            "SATUPINTU_WEB_WORKERS": "1"}
    start_sandbox(fleet, sandbox_urls, base, callback_url=f"{gateway}/v1/agencies/municipality/callbacks")
    fleet.role("gateway", "serve", base)
    fleet.role("relay", "relay", base)
    fleet.role("tracker", "tracker", base)
    for i in (1, 2):
        fleet.role(f"worker-{i}", "worker", base)
    wait_ready(fleet, [gateway])
    namespace = env["SATUPINTU_NAMESPACE"]
    wait_until(lambda: len(queue_leaders(cluster, namespace)) >= len(SANDBOX_AGENCIES) + 2, 60,
               message="the namespace's queues to be declared")

    key = make_key("submit", "read")
    first = submit_all([gateway], key, [bundle(example, i, "a") for i in range(BUNDLES // 2)], threads=6)
    # Mid-run: some bundles decided, most still moving through the queues.
    wait_until(lambda: undecided(engine, first) < len(first) * 0.8, 120, interval=0.5,
               message="the first bundles to be under way")

    # The victim: the node most of our processes are connected to (then the one leading
    # most queues), so both client reconnection and queue leader fail-over are exercised.
    leaders = queue_leaders(cluster, namespace)
    clients = {node.name: [n for n in connection_names(cluster, node) if n.startswith("satupintu-")]
               for node in cluster.nodes}
    led = Counter(leaders.values())
    victim = max(cluster.nodes, key=lambda node: (len(clients[node.name]), led[node.name]))
    victim_name = victim.name
    survivors = [node for node in cluster.nodes if node is not victim]
    assert clients[victim_name], clients
    cluster.kill_node(victim)

    second = submit_all([gateway], key, [bundle(example, i, "b") for i in range(BUNDLES // 2)], threads=6)
    ids = first + second

    def all_decided() -> bool:
        fleet.check_alive()
        return undecided(engine, ids) == 0
    # Rows whose publish was cut off are published again on the relay's next connection.
    try:
        wait_until(all_decided, 180, interval=2, message=f"{BUNDLES} bundles to be decided after the node loss")
    except pytest.fail.Exception:
        print(where_undecided(engine, ids))
        print(fleet.tail(120))
        raise

    with engine.connect() as conn:
        by_status = dict(conn.execute(select(t.applications.c.status, func.count())
                                      .where(t.applications.c.id.in_(ids)).group_by(t.applications.c.status)).all())
    assert by_status == {"completed": BUNDLES}, fleet.tail()
    stats = sandbox_stats(sandbox_urls)
    for agency, numbers in stats.items():
        assert numbers["unique_request_ids"] == BUNDLES, (agency, numbers)
    assert step_outcomes_missing(engine, ids) == []

    # The queues moved their leaders to the survivors, and every role talks to a survivor.
    after = queue_leaders(cluster, namespace)
    assert set(after) == set(leaders)
    assert victim_name not in set(after.values())
    roles = " ".join(name for node in survivors for name in connection_names(cluster, node))
    for role in ("relay", "tracker", "worker"):
        assert f"satupintu-{role}" in roles, roles
    duplicates = {agency: numbers["duplicates"] for agency, numbers in stats.items()}
    print(f"\nkilled {victim_name} (leader of {led[victim_name]} of {len(leaders)} queues, connected to "
          f"{', '.join(clients[victim_name])}); redelivered to agencies with the same request id: {duplicates}")
    assert requests.get(gateway + "/readyz", timeout=5).ok
