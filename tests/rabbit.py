"""Private RabbitMQ nodes for tests: a node or a cluster of our own, never the default node.

Imported as ``rabbit`` (tests/ is on sys.path through its conftest.py).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from support import free_port, wait_until

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


def rabbitmq_problem() -> str | None:
    """Why a cluster of our own cannot be started here, or None."""
    for path in (RABBITMQ_SERVER, RABBITMQCTL):
        if not os.access(path, os.X_OK):
            return f"{path} is not installed (apt-get install rabbitmq-server)"
    if shutil.which("erl") is None:
        return "erl is not on PATH (the Erlang runtime of rabbitmq-server)"
    return None


@dataclass
class Node:
    name: str
    amqp_port: int
    dist_port: int
    env: dict[str, str]
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"


class RabbitCluster:
    """Three RabbitMQ nodes on this machine, clustered; nothing shared with the default node.

    Each node has its own name (``sp-<random>-N@localhost``), AMQP and distribution ports,
    data, log and config files under ``folder``, and an Erlang cookie of its own in a
    private ``HOME`` (the default node's cookie is never read).  Started with
    ``rabbitmq-server`` in the foreground (its own session, so it can be stopped by group),
    joined with ``rabbitmqctl join_cluster``.
    """

    def __init__(self, folder: Path, size: int = 3):
        self.folder = folder
        self.home = folder / "home"
        self.home.mkdir(parents=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)
        tag = f"sp-{secrets.token_hex(3)}"
        self.nodes = [self._node(f"{tag}-{i}@localhost", folder / f"node{i}") for i in range(1, size + 1)]

    def _node(self, name: str, folder: Path) -> Node:
        folder.mkdir()
        amqp, dist = free_port(), free_port()
        (folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{amqp}\n"
            "loopback_users = none\n"
            # Small machine, three nodes: stay well below the memory alarm of the default node.
            "vm_memory_high_watermark.relative = 0.2\n"
            "disk_free_limit.absolute = 50MB\n")
        (folder / "rabbitmq-env.conf").write_text("# empty: /etc/rabbitmq/rabbitmq-env.conf names the default node\n")
        (folder / "enabled_plugins").write_text("[].\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.home),
            RABBITMQ_NODENAME=name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(amqp),
            RABBITMQ_DIST_PORT=str(dist),
            RABBITMQ_MNESIA_BASE=str(folder / "mnesia"),
            RABBITMQ_LOG_BASE=str(folder / "log"),
            RABBITMQ_CONFIG_FILE=str(folder / "rabbitmq.conf"),
            RABBITMQ_CONF_ENV_FILE=str(folder / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(folder / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(folder / "rabbitmq.pid"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return Node(name=name, amqp_port=amqp, dist_port=dist, env=env)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def ctl(self, node: Node, *args: str, timeout: float = 90) -> str:
        result = subprocess.run([RABBITMQCTL, "-n", node.name, *args], env=node.env, capture_output=True,
                                text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl -n {node.name} {' '.join(args)} failed ({result.returncode}): "
                               f"{result.stdout[-800:]} {result.stderr[-800:]}")
        return result.stdout

    def start_node(self, node: Node) -> None:
        log = (self.folder / f"{node.name.split('@')[0]}.out").open("ab")
        node.process = subprocess.Popen([RABBITMQ_SERVER], env=node.env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, cwd=str(self.folder))

    def wait_node(self, node: Node, timeout: float = 90) -> None:
        """Until the node answers AMQP logins (the port opens a little before)."""
        import pika

        def answers() -> bool:
            if node.process is not None and node.process.poll() is not None:
                out = (self.folder / f"{node.name.split('@')[0]}.out").read_text(errors="replace")
                raise RuntimeError(f"{node.name} exited with {node.process.returncode}: {out[-1500:]}")
            try:
                params = pika.URLParameters(node.url)
                params.socket_timeout = 2
                params.connection_attempts = 1
                pika.BlockingConnection(params).close()
                return True
            except Exception:  # noqa: BLE001 - any failure means "not yet"
                return False
        quiet = logging.getLogger("pika")
        level, quiet.level = quiet.level, logging.CRITICAL  # refused connections are expected here
        try:
            wait_until(answers, timeout, interval=0.5, message=f"RabbitMQ node {node.name}")
        finally:
            quiet.setLevel(level)

    def start(self) -> None:
        """Boot every node, then join nodes 2.. to node 1."""
        for node in self.nodes:
            self.start_node(node)
        for node in self.nodes:
            self.wait_node(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        for node in self.nodes[1:]:
            self.wait_node(node)

    def running_nodes(self, via: Node) -> list[str]:
        import json
        status = json.loads(self.ctl(via, "cluster_status", "--formatter", "json"))
        return sorted(status.get("running_nodes", []))

    def kill_node(self, node: Node) -> None:
        """Stop a node hard (SIGKILL of its process group), as a crashed machine would."""
        if node.process and node.process.poll() is None:
            try:
                os.killpg(node.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            node.process.wait(30)

    def stop(self) -> None:
        """Stop every node still running (SIGTERM to its group, SIGKILL after 30 s)."""
        for node in self.nodes:
            if node.process and node.process.poll() is None:
                try:
                    os.killpg(node.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(30)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(node.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                node.process.wait()
