"""``python -m bench.sandbox_call``: the CPU one ``POST /companies`` costs the sandbox.

The sandbox company registry (waitress, front desk, Flask app, ledger: what ``python -m
sandbox`` serves, with its default thread pool and connection limit) runs in a process of
its own on a free port.  ``-n`` filing calls with fresh ``Idempotency-Key``s, carrying the
headers the REST adapter sends, go to it over keep-alive ``http.client`` connections from
``--threads`` threads; the server process's CPU time (user + system, from
``/proc/<pid>/stat``) is divided by the number of calls.  ``--runs R`` repeats the
measurement and prints each run, so that a noisy neighbour shows up as spread.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = json.dumps({"company_name": "PT Maju Bersama", "owner_nik": "3171012345670123"}).encode()
# What the REST adapter sends besides Host, Content-Length and the idempotency key.
HEADERS = {
    "User-Agent": "satupintu-adapter/1",
    "Accept-Encoding": "gzip, deflate",
    "Accept": "application/json",
    "Connection": "keep-alive",
    "Content-Type": "application/json",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "X-Satupintu-Application": "app-0000000042",
}


def _serve() -> None:
    from sandbox.agency import Agency
    from sandbox.agency_server import AgencyServer
    from sandbox.company_registry import AGENCY_ID
    from sandbox.scheduler import Scheduler
    from sandbox.server import PROTOCOLS, SandboxSettings, build_app

    settings = SandboxSettings()
    scheduler = Scheduler()  # the registry's app takes none, but build_app() asks for one
    desk = build_app(Agency(AGENCY_ID, PROTOCOLS[AGENCY_ID]), scheduler)
    server = AgencyServer(AGENCY_ID, desk, "127.0.0.1", 0, threads=settings.threads,
                          connection_limit=settings.connection_limit)
    print(server.start(), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.begin_stop()
    server.stop(time.monotonic() + 2)
    scheduler.stop()


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid``, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _measure(port: int, pid: int, calls: int, threads: int) -> tuple[float, float, float]:
    """(server CPU ms per call, its system share, wall seconds) of ``calls`` filings over
    ``threads`` connections."""
    per_thread = calls // threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    def work() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        prefix = uuid.uuid4().hex
        try:
            start.wait()
            for i in range(per_thread):
                connection.request("POST", "/companies", BODY,
                                   {**HEADERS, "X-Satupintu-Request": f"{prefix}-{i}",
                                    "Idempotency-Key": f"{prefix}-{i}"})
                reply = connection.getresponse()
                reply.read()
                if reply.status != 201:
                    raise RuntimeError(f"POST /companies answered {reply.status}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    cpu0, wall0 = _cpu_seconds(pid), time.perf_counter()
    start.wait()
    for t in workers:
        t.join()
    cpu1, wall = _cpu_seconds(pid), time.perf_counter() - wall0
    if errors:
        raise errors[0]
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    return (user + system) * 1000 / (per_thread * threads), system / max(user + system, 1e-9), wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sandbox_call", description=__doc__.splitlines()[0])
    p.add_argument("-n", "--calls", type=int, default=5000, help="calls per run")
    p.add_argument("--threads", type=int, default=8, help="calling threads, one keep-alive connection each")
    p.add_argument("--runs", type=int, default=5, help="measurements (the first is preceded by a warm-up)")
    p.add_argument("--idle", type=int, default=0,
                   help="extra keep-alive connections left open and idle, as a worker's pool keeps them")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        _serve()
        return 0

    server = subprocess.Popen([sys.executable, "-m", "bench.sandbox_call", "--serve"], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(args.idle)]
        _measure(port, server.pid, min(args.calls, 1000), args.threads)  # warm-up: imports, caches
        figures = []
        for run in range(args.runs):
            per_call, system, wall = _measure(port, server.pid, args.calls, args.threads)
            figures.append(per_call)
            print(f"run {run + 1}: {per_call:.3f} ms sandbox CPU per call ({system:.0%} system), "
                  f"{args.calls / wall:,.0f} calls/s", flush=True)
        figures.sort()
        print(f"median {figures[len(figures) // 2]:.3f} ms sandbox CPU per call (best {figures[0]:.3f}), "
              f"{args.calls} calls x {args.runs} runs, {args.threads} threads, {args.idle} idle connections")
        for sock in idle:
            sock.close()
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
