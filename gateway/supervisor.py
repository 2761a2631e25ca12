"""``satupintu run``: every role in one supervised process tree.

Children are real processes (the same ones ``serve``, ``relay``, ``worker``, ``tracker``
and ``sandbox`` start on their own).  A child that dies is restarted with backoff; on
SIGINT or SIGTERM every child gets SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

log = logging.getLogger("satupintu.supervisor")


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    stdout: int | None = None
    # Sockets the child inherits: the gateway's listener, held here so that a restarted
    # gateway serves on the same port and connections wait in its backlog meanwhile.
    pass_fds: tuple[int, ...] = ()

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, stdout=self.stdout, pass_fds=self.pass_fds)
        self.started_at = time.monotonic()
        log.info("started %s (pid %s)", self.name, self.process.pid)


class Supervisor:
    def __init__(self, children: list[Child], *, grace: float = 10.0):
        self.children = children
        self.grace = grace
        self.stopping = False

    def _on_signal(self, signum: int, _frame) -> None:
        self.stopping = True

    def start(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for child in self.children:
            if child.process is None:
                child.start()

    def watch(self, until=lambda: False) -> None:
        """Restart children that die, until a signal arrives or ``until()`` is true."""
        while not self.stopping and not until():
            now = time.monotonic()
            for child in self.children:
                if child.process is None:
                    if now >= child.next_start:
                        child.start()
                    continue
                code = child.process.poll()
                if code is None:
                    continue
                # Back off when a child keeps dying quickly, so a broken one cannot spin.
                quick = now - child.started_at < 10
                child.restarts += 1
                delay = min(30.0, 0.5 * (2 ** min(child.restarts, 6))) if quick else 0.5
                log.warning("%s exited with %s; restarting in %.1fs", child.name, code, delay)
                child.process = None
                child.next_start = now + delay
            time.sleep(0.2)

    def stop(self) -> None:
        for child in self.children:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.name)
                child.process.kill()
                child.process.wait()


def role_argv(role: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", role, *args]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def listen(bind: str) -> socket.socket:
    """A listening socket on ``bind`` (``host:port``; port 0: one the kernel picks), for a
    child to inherit."""
    host, _, port = bind.rpartition(":")
    sock = socket.create_server((host.strip("[]") or "127.0.0.1", int(port)), backlog=1024,
                                family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.set_inheritable(True)
    return sock


def wait_file(path: str, timeout: float, alive=lambda: True, interval: float = 0.1) -> bool:  # noqa: ANN001
    """Whether ``path`` exists within ``timeout`` while ``alive()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if os.path.exists(path):
            return True
        time.sleep(interval)
    return False


def wait_http(url: str, timeout: float, alive=lambda: True, interval: float = 0.2) -> bool:  # noqa: ANN001
    """Whether ``url`` answers (any status below 500) within ``timeout`` while ``alive()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return True
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return True
        except OSError:
            pass
        time.sleep(interval)
    return False
