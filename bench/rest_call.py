"""``python -m bench.rest_call``: the CPU one REST agency call costs the calling process.

A tiny HTTP/1.1 keep-alive server in another process answers every request at once with a
fixed JSON body; ``-n`` calls go through ``RestAdapter.send`` from ``--threads`` threads,
and the CPU time of this process (all threads, user + system, ``resource.getrusage``) is
divided by the number of calls.  ``--runs R`` repeats the measurement in the same process
and prints each run, so that a noisy neighbour shows up as spread rather than as a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import threading
import time
from typing import Any

ANSWER = json.dumps({"company_number": "AHU-1", "status": "REGISTERED"}).encode()
RESPONSE = (b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            writer.write(RESPONSE)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _serve() -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", 0, backlog=128)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(adapter: Any, request: Any, calls: int, threads: int) -> tuple[float, float]:
    """(CPU ms per call, wall seconds) of ``calls`` sends spread over ``threads`` threads."""
    per_thread = calls // threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    def work() -> None:
        start.wait()
        try:
            for _ in range(per_thread):
                adapter.send(request)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    cpu0, wall0 = _cpu(), time.perf_counter()
    start.wait()
    for t in workers:
        t.join()
    cpu, wall = _cpu() - cpu0, time.perf_counter() - wall0
    if errors:
        raise errors[0]
    return cpu * 1000 / (per_thread * threads), wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rest_call", description=__doc__.splitlines()[0])
    p.add_argument("-n", "--calls", type=int, default=5000, help="calls per run")
    p.add_argument("--threads", type=int, default=8, help="calling threads")
    p.add_argument("--runs", type=int, default=3, help="measurements (the first is preceded by a warm-up)")
    p.add_argument("--auth", default="none", choices=["none", "bearer", "hmac"], help="the agency's auth type")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        asyncio.run(_serve())
        return 0

    from adapters.base import AgencyRequest
    from adapters.rest import RestAdapter
    from core.model import Agency

    server = subprocess.Popen([sys.executable, "-m", "bench.rest_call", "--serve"], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        auth = {"none": {"type": "none"}, "bearer": {"type": "bearer", "token": "t0ken"},
                "hmac": {"type": "hmac", "secret": "s3cret"}}[args.auth]
        agency = Agency(id="bench", name="Bench agency", adapter="rest", endpoint=f"http://127.0.0.1:{port}",
                        file="bench", concurrency=args.threads, auth=auth,
                        statuses={"REGISTERED": "approved"},
                        operations={"register": {"method": "POST", "path": "/companies",
                                                 "response": {"reference": "company_number", "status": "status"}}})
        adapter = RestAdapter(agency)
        request = AgencyRequest(request_id="req-0001", application_id="app-42", service="open-a-business",
                                step="register", agency="bench", operation="register",
                                payload={"name": "PT Maju", "nik": "3171012345670123", "address": {"city": "Jakarta"}},
                                headers={"traceparent": "00-abc-def-01", "X-Satupintu-Application": "app-42"})
        _measure(adapter, request, min(args.calls, 1000), args.threads)  # warm-up: connections, caches
        figures = []
        for run in range(args.runs):
            per_call, wall = _measure(adapter, request, args.calls, args.threads)
            figures.append(per_call)
            print(f"run {run + 1}: {per_call:.3f} ms CPU per call, {args.calls / wall:,.0f} calls/s")
        figures.sort()
        print(f"median {figures[len(figures) // 2]:.3f} ms CPU per call (best {figures[0]:.3f}), "
              f"{args.calls} calls x {args.runs} runs, {args.threads} threads, auth {args.auth}")
        adapter.close()
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
