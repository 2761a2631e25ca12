"""Peak RSS and CPU seconds of process trees, read from /proc (Linux; no psutil needed).

A role (gateway, relay, ...) is a process tree: gunicorn's master and its workers, the
worker with its threads.  The sampler walks each tree every ``interval`` seconds, keeps
each process's peak resident set (the kernel's ``VmHWM``, so spikes between samples count)
and its CPU time, so a role's figures survive processes that exit before the end.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from dataclasses import dataclass, field

_TICKS = os.sysconf("SC_CLK_TCK")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children[ppid].append(int(entry))
    return children


def tree(root: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """``root`` and all its descendants."""
    children = children if children is not None else _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def peak_rss_mb(pid: int) -> float | None:
    """The peak resident set (``VmHWM``) of ``pid`` in MiB, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def listener_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` (e.g. 5672: the RabbitMQ this bench uses), if visible."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{fields[9]}]")
        except OSError:
            continue
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                    return int(entry)
        except OSError:
            continue
    return None


@dataclass
class RoleStats:
    peak_rss_mb: float = 0.0  # the largest single process of the role
    cpu_start: dict[int, float] = field(default_factory=dict)
    cpu_last: dict[int, float] = field(default_factory=dict)
    processes: int = 0

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu_last[p] - self.cpu_start.get(p, 0.0) for p in self.cpu_last)


class Sampler:
    """Samples the process trees of named roles in a background thread."""

    def __init__(self, roots: dict[str, list[int]], interval: float = 0.5):
        self.roots = roots
        self.interval = interval
        self.stats: dict[str, RoleStats] = {role: RoleStats() for role in roots}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._baseline_taken = False

    def start(self) -> None:
        """Take the CPU baseline now (start-up costs are not counted) and begin sampling."""
        self.sample(baseline=True)
        self._thread.start()

    def stop(self) -> dict[str, RoleStats]:
        self._stop.set()
        self._thread.join(5)
        self.sample()
        return self.stats

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self, baseline: bool = False) -> None:
        children = _children_map()
        for role, roots in self.roots.items():
            stats = self.stats[role]
            pids = [p for root in roots for p in tree(root, children)]
            stats.processes = max(stats.processes, len(pids))
            for pid in pids:
                cpu, rss = cpu_seconds(pid), peak_rss_mb(pid)
                if cpu is None:
                    continue
                if baseline:
                    stats.cpu_start[pid] = cpu
                elif pid not in stats.cpu_start and pid not in stats.cpu_last:
                    stats.cpu_start[pid] = 0.0  # born during the run: all its CPU counts
                stats.cpu_last[pid] = cpu
                if rss is not None:
                    stats.peak_rss_mb = max(stats.peak_rss_mb, rss)
