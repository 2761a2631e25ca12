"""``python -m bench.worker_calls``: the CPU a worker spends per agency request, in-process.

A real ``Worker`` (the bench catalog's three REST registries) consumes from the local
RabbitMQ under a namespace of its own; the agencies are the tiny keep-alive HTTP stub of
``bench.rest_call`` in another process, answering at once.  Each run pre-publishes ``-n``
dispatch messages (as the relay would: the outbox's body and headers), starts a fresh
worker in a thread and waits until every outcome event sits in the namespace's tracker
queue.  The figure is the CPU of the worker's threads (ioloop and agency-call threads, from
``/proc/self/task/*/schedstat``; the measuring thread is left out) divided by the
messages; the process's total is printed too.  ``--runs`` repeats; the median is the
figure to compare.  The namespace's queues and exchanges are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pika

REPO = Path(__file__).resolve().parents[1]
AGENCIES = ("registry-a", "registry-b", "registry-c")


def _thread_cpu(exclude: set[int]) -> float:
    """Seconds on CPU of this process's threads, except ``exclude`` (native thread ids)."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        if int(tid) in exclude:
            continue
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def _publish(channel, names, count: int) -> None:
    from broker.publisher import encode
    from gateway.workflow import dispatch_message
    channel.confirm_delivery()
    for i in range(count):
        app = SimpleNamespace(id=f"app_{uuid.uuid4().hex}", service="bench-fast")
        agency = AGENCIES[i % 3]
        request = SimpleNamespace(id=f"req_{uuid.uuid4().hex}", step="abc"[i % 3], agency=agency,
                                  operation="register")
        row = dispatch_message(app=app, request=request, payload={"company_name": f"PT Bench {i:07d}",
                                                                  "owner_nik": "3171012345670123"})
        channel.basic_publish(names.exchange(row["exchange"]), row["routing_key"], encode(row["body"]),
                              pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                                   headers=row["headers"], message_id=row["body"]["message_id"]),
                              mandatory=True)


def _run_once(catalog, url: str, namespace: str, count: int, channel, names) -> tuple[float, float, float]:
    import dataclasses

    from broker.worker import Worker
    from core.settings import Settings
    channel.queue_purge(names.tracker)
    _publish(channel, names, count)
    settings = dataclasses.replace(Settings.from_env(), amqp_urls=(url,), namespace=namespace)
    worker = Worker(catalog, settings, agencies=list(AGENCIES))
    main = {threading.get_native_id()}
    cpu0, proc0, wall0 = _thread_cpu(main), time.process_time(), time.perf_counter()
    worker.start()
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while channel.queue_declare(names.tracker, passive=True).method.message_count < count:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the worker did not publish every outcome")
        time.sleep(0.05)
    cpu, proc, wall = _thread_cpu(main) - cpu0, time.process_time() - proc0, time.perf_counter() - wall0
    worker.stop()
    thread.join(60)
    return cpu * 1000 / count, proc * 1000 / count, count / wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.worker_calls", description=__doc__.splitlines()[0])
    p.add_argument("-n", "--messages", type=int, default=3000, help="dispatch messages per run")
    p.add_argument("--runs", type=int, default=5, help="measurements (after one warm-up run)")
    p.add_argument("--amqp-url", default=os.environ.get("SATUPINTU_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"))
    args = p.parse_args(argv)

    server = subprocess.Popen([sys.executable, "-m", "bench.rest_call", "--serve"], stdout=subprocess.PIPE,
                              text=True, cwd=REPO)
    namespace = f"bench-wc-{uuid.uuid4().hex[:8]}"
    connection = None
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        for agency in AGENCIES:
            os.environ[f"SATUPINTU_BENCH_{agency.upper().replace('-', '_')}_URL"] = f"http://127.0.0.1:{port}"
        os.environ.setdefault("SATUPINTU_STATE_DIR", tempfile.mkdtemp(prefix="bench-worker-calls-"))
        from broker.topology import Names, declare_for, delete_for
        from gateway.catalog import load_catalog
        catalog = load_catalog(REPO / "bench" / "catalog")
        names = Names(namespace)
        connection = pika.BlockingConnection(pika.URLParameters(args.amqp_url))
        channel = connection.channel()
        agencies = [catalog.agencies[a] for a in AGENCIES]
        declare_for(channel, names, agencies)
        try:
            _run_once(catalog, args.amqp_url, namespace, min(args.messages, 1000), channel, names)  # warm-up
            figures = []
            for run in range(args.runs):
                per_msg, proc_per_msg, rate = _run_once(catalog, args.amqp_url, namespace, args.messages,
                                                        channel, names)
                figures.append(per_msg)
                print(f"run {run + 1}: {per_msg:.3f} ms worker CPU per message "
                      f"(process {proc_per_msg:.3f}), {rate:,.0f} messages/s", flush=True)
            figures.sort()
            print(f"median {figures[len(figures) // 2]:.3f} ms worker CPU per message (best {figures[0]:.3f}), "
                  f"{args.messages} messages x {args.runs} runs, namespace {namespace}")
        finally:
            delete_for(channel, names, agencies)
    finally:
        if connection is not None and connection.is_open:
            connection.close()
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
