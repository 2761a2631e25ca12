"""The bench scenarios: each starts its own stack, measures, cleans up, returns a dict.

``submit``    gateway only: submissions/s and latency, nothing downstream running
``fast``      3 parallel REST steps, agencies answer at once: end to end
``slow``      the same with every agency call taking 200 ms (sandbox ``latency_ms``)
``mixed``     the demo business-startup: REST + SOAP, a DAG, callbacks
``naive``     the peer to beat: a Flask handler filing the ``fast`` bundle at the agencies in turn
``relay``     a pre-filled outbox published by the relay alone: confirmed messages/s
``backlog``   a queued backlog (outbox rows) published and drained by the whole stack
``big-store`` status lookups with 1,000 and then 1,000,000 stored applications
"""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from gateway.store import tables as t
from gateway.supervisor import wait_http

from . import seed
from .load import drive, percentile, reader, submitter
from .procstats import Sampler, listener_pid
from .stack import DEMO_CATALOG, REPO, Process, Stack, StackConfig, free_port

# Event types only workers publish (one message each); "retry" also costs a retry-tier publish.
WORKER_EVENTS = ("attempt", "outcome", "poll", "retry", "deferred", "cancel-failed",
                 "send-unsupported", "cancel-unsupported", "poll-unsupported")
SATUPINTU_ROLES = ("gateway", "relay", "tracker", "worker")


@dataclass
class Options:
    bundles: int = 2000
    concurrency: int = 16
    workers: int = 1
    database_url: str | None = None
    web_workers: int | None = None
    web_threads: int | None = None
    backlog_requests: int = 30_000
    relay_messages: int = 20_000
    big_store_rows: int = 1_000_000
    lookups: int = 5000
    timeout: float = 600
    rate_limit: str = "0"
    keep: bool = False
    quiet: bool = False


def say(options: Options, message: str) -> None:
    if not options.quiet:
        print(f"bench: {message}", flush=True)


def _config(options: Options, **overrides: Any) -> StackConfig:
    values = dict(workers=options.workers, database_url=options.database_url, web_workers=options.web_workers,
                  web_threads=options.web_threads, keep=options.keep, rate_limit=options.rate_limit)
    values.update(overrides)
    return StackConfig(**values)


def _fast_body(i: int) -> dict[str, Any]:
    return {"service": "bench-fast", "reference": f"BENCH-{i}",
            "data": {"name": f"PT Bench {i:07d}", "nik": "3171012345670123"}}


_EXAMPLE = json.loads((REPO / "examples" / "business-startup.json").read_text())


def _mixed_body(i: int) -> dict[str, Any]:
    body = copy.deepcopy(_EXAMPLE)
    body["data"]["company"]["name"] = f"PT Usaha Bench {i:07d}"
    body["reference"] = f"BENCH-{i}"
    return body


def _sampler(stack: Stack) -> Sampler:
    roots = stack.roots()
    rabbit = listener_pid(_amqp_port(stack.config.amqp_url))
    if rabbit:
        roots["rabbitmq"] = [rabbit]
    return Sampler(roots)


def _amqp_port(url: str) -> int:
    from urllib.parse import urlsplit
    return urlsplit(url).port or 5672


def _process_figures(stats: dict, bundles: int, unit: str = "bundle") -> dict[str, Any]:
    roles = {role: {"peak_rss_mb": round(s.peak_rss_mb, 1), "cpu_seconds": round(s.cpu_seconds, 2),
                    "processes": s.processes}
             for role, s in stats.items()}
    ours = sum(stats[r].cpu_seconds for r in SATUPINTU_ROLES if r in stats)
    everything = sum(s.cpu_seconds for s in stats.values())
    return {
        "processes": roles,
        "max_rss_mb": round(max((stats[r].peak_rss_mb for r in SATUPINTU_ROLES if r in stats), default=0), 1),
        "cpu_ms_per_bundle": round(1000 * ours / max(bundles, 1), 2),
        "cpu_ms_per_bundle_all": round(1000 * everything / max(bundles, 1), 2),
        "cpu_unit": unit,
    }


def _messages(stack: Stack) -> int:
    """Messages published to RabbitMQ so far: outbox rows + worker-published events."""
    with stack.engine.connect() as conn:
        outbox = conn.execute(select(func.count()).select_from(t.outbox)
                              .where(t.outbox.c.sent_at.is_not(None))).scalar()
        worker = conn.execute(select(func.count()).select_from(t.events)
                              .where(t.events.c.type.in_(WORKER_EVENTS))).scalar()
        retries = conn.execute(select(func.count()).select_from(t.events).where(t.events.c.type == "retry")).scalar()
        dead = conn.execute(select(func.count()).select_from(t.dead_letters)).scalar()
    return outbox + worker + retries + dead


def _decided(stack: Stack) -> int:
    with stack.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.applications)
                            .where(t.applications.c.status != "in_progress")).scalar()


def _wait_decided(stack: Stack, total: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    decided = 0
    while time.monotonic() < deadline and stack.alive():
        decided = _decided(stack)
        if decided >= total:
            break
        time.sleep(0.1)
    return decided


def _outcomes(stack: Stack, ids: list[str]) -> list[Any]:
    rows = []
    with stack.engine.connect() as conn:
        for start in range(0, len(ids), 500):
            rows += conn.execute(select(t.applications.c.status, t.applications.c.created_at,
                                        t.applications.c.updated_at)
                                 .where(t.applications.c.id.in_(ids[start:start + 500]))).all()
    return rows


def _ts(value) -> float:
    import datetime as dt
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _pipeline(options: Options, *, name: str, config: StackConfig, body) -> dict[str, Any]:
    """Submit N bundles at concurrency C through the whole stack and wait for every decision."""
    stack = Stack(config)
    try:
        stack.prepare()
        stack.start_sandbox()
        stack.start("serve", "relay", "tracker", "worker")
        warmup = min(100, max(10, options.bundles // 20))
        say(options, f"{name}: warm-up with {warmup} bundles")
        warm = drive(stack.url, stack.api_key, warmup, min(options.concurrency, warmup), submitter(body))
        if warm.errors:
            raise RuntimeError(f"warm-up failed: {warm.errors[0]}")
        _wait_decided(stack, warmup, options.timeout)
        sampler = _sampler(stack)
        sampler.start()
        client0 = os.times()
        say(options, f"{name}: {options.bundles} bundles at concurrency {options.concurrency}")
        load = drive(stack.url, stack.api_key, options.bundles, options.concurrency,
                     submitter(lambda i: body(warmup + i)))
        submitted_done = time.time()
        decided = _wait_decided(stack, warmup + load.ok, options.timeout)
        stats = sampler.stop()
        client1 = os.times()
        rows = _outcomes(stack, load.ids)
        finished = [r for r in rows if r.status != "in_progress"]
        e2e = [_ts(r.updated_at) - _ts(r.created_at) for r in finished]
        last = max((_ts(r.updated_at) for r in finished), default=submitted_done)
        statuses: dict[str, int] = {}
        for r in rows:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        messages = _messages(stack)
        return {
            "scenario": name, "namespace": stack.namespace,
            "bundles": options.bundles, "concurrency": options.concurrency, "workers": config.workers,
            "submit": load.summary(),
            "end_to_end": {
                "bundles": len(finished), "per_second": round(len(finished) / max(last - load.started, 1e-9), 1),
                "p50_ms": round(percentile(e2e, 50) * 1000, 1), "p99_ms": round(percentile(e2e, 99) * 1000, 1),
                "seconds": round(last - load.started, 2), "statuses": statuses,
                "timed_out": decided < warmup + load.ok,
            },
            "messages_per_bundle": round(messages / max(warmup + load.ok, 1), 2),
            "client_cpu_seconds": round((client1.user + client1.system) - (client0.user + client0.system), 2),
            **_process_figures(stats, load.ok),
        }
    finally:
        stack.close()


def fast(options: Options) -> dict[str, Any]:
    return _pipeline(options, name="fast", config=_config(options), body=_fast_body)


def slow(options: Options) -> dict[str, Any]:
    faults = json.dumps({"company-registry": {"latency_ms": 200}})
    return _pipeline(options, name="slow", config=_config(options, sandbox_faults=faults), body=_fast_body)


def mixed(options: Options) -> dict[str, Any]:
    # Municipality and social security decide 50 ms after filing (sandbox --decision-delay).
    return _pipeline(options, name="mixed", config=_config(options, catalog=DEMO_CATALOG, decision_delay=0.05),
                     body=_mixed_body)


def submit(options: Options) -> dict[str, Any]:
    """The gateway alone: how fast it takes bundles (its outbox simply fills up)."""
    stack = Stack(_config(options))
    try:
        stack.prepare()
        stack.start("serve")
        drive(stack.url, stack.api_key, 200, options.concurrency, submitter(_fast_body))  # warm-up
        sampler = _sampler(stack)
        sampler.start()
        say(options, f"submit: {options.bundles} submissions at concurrency {options.concurrency}")
        load = drive(stack.url, stack.api_key, options.bundles, options.concurrency,
                     submitter(lambda i: _fast_body(200 + i)))
        stats = sampler.stop()
        return {"scenario": "submit", "namespace": stack.namespace, "bundles": options.bundles, "concurrency": options.concurrency,
                "submit": load.summary(), **_process_figures(stats, load.ok, unit="submission")}
    finally:
        stack.close()


def ceiling(options: Options) -> dict[str, Any]:
    """A bare Flask endpoint under gunicorn, three ways (sync, gthread and the gateway's own
    gthread worker, ``gateway/serving.py``), driven as ``submit`` drives the gateway."""
    threaded = ["--workers", "2", "--threads", "8", "--keep-alive", "55"]
    models = {"sync 2": ["--workers", "2", "--worker-class", "sync"],
              "gthread 2x8": [*threaded, "--worker-class", "gthread"],
              "gateway's 2x8": [*threaded, "--worker-class", "gthread"]}
    results = {}
    for label, argv in models.items():
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--log-level",
                                    "warning", *argv, "bench.ceiling:app"], cwd=REPO, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            if not wait_http(url + "/nothing", 30, alive=lambda p=process: p.poll() is None):
                raise RuntimeError(f"gunicorn ({label}) did not come up")
            drive(url, "-", 500, options.concurrency, submitter(_fast_body))  # warm-up
            sampler = Sampler({"gunicorn": [process.pid]})
            sampler.start()
            say(options, f"ceiling: {options.bundles} requests to a bare Flask endpoint, gunicorn {label}")
            load = drive(url, "-", options.bundles, options.concurrency, submitter(_fast_body))
            stats = sampler.stop()["gunicorn"]
            results[label] = {**load.summary(), "cpu_ms_per_request": round(1000 * stats.cpu_seconds / max(load.ok, 1), 3)}
        finally:
            Process("ceiling", label, process).stop()
    return {"scenario": "ceiling", "bundles": options.bundles, "concurrency": options.concurrency,
            "ceiling": results}


def naive(options: Options) -> dict[str, Any]:
    """The naive synchronous fan-out (``bench/naive.py``) against ``fast``'s agencies, driven
    as ``fast`` is: each answered request is a bundle filed at all three agencies, and nothing
    stored.  Under gunicorn 2 x 8 gthread, as the gateway runs."""
    stack = Stack(_config(options))
    try:
        stack.start_sandbox()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--log-level",
                                    "warning", "--workers", "2", "--threads", "8", "--keep-alive", "55",
                                    "--worker-class", "gthread", "bench.naive:app"],
                                   cwd=REPO, env=stack.env, start_new_session=True)
        stack.processes.append(Process("naive", "naive", process))
        if not wait_http(url + "/nothing", 30, alive=stack.alive):
            raise RuntimeError(f"the naive peer did not come up:\n{stack.tail()}")
        warmup = drive(url, "-", 100, options.concurrency, submitter(_fast_body))
        if warmup.errors:
            raise RuntimeError(f"warm-up failed: {warmup.errors[0]}")
        sampler = Sampler({role: pids for role, pids in stack.roots().items()})
        sampler.start()
        say(options, f"naive: {options.bundles} bundles at concurrency {options.concurrency}")
        load = drive(url, "-", options.bundles, options.concurrency, submitter(lambda i: _fast_body(100 + i)))
        stats = sampler.stop()
        summary = load.summary()
        return {"scenario": "naive", "bundles": options.bundles, "concurrency": options.concurrency,
                "submit": summary,
                "end_to_end": {"bundles": load.ok, "per_second": summary["per_second"], "p50_ms": summary["p50_ms"],
                               "p99_ms": summary["p99_ms"], "seconds": round(load.finished - load.started, 2),
                               "statuses": {"filed": load.ok}, "timed_out": False},
                "messages_per_bundle": 0, **_process_figures(stats, load.ok)}
    finally:
        stack.close()


def _unsent(stack: Stack) -> int:
    with stack.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.outbox).where(t.outbox.c.sent_at.is_(None))).scalar()


def _backlog(options: Options, *, name: str, requests: int, drain: bool) -> dict[str, Any]:
    stack = Stack(_config(options))
    try:
        stack.prepare()
        service = stack.catalog.services["bench-fast"]
        bundles = max(1, requests // len(service.steps))
        say(options, f"{name}: seeding {bundles} bundles = {bundles * len(service.steps)} queued requests")
        t0 = time.monotonic()
        seed.applications(stack.engine, service, bundles, client=seed.client_id(stack.engine),
                          status="in_progress", request_status="queued", outbox=True)
        seeded = time.monotonic() - t0
        total = bundles * len(service.steps)
        if drain:
            stack.start_sandbox()
        stack.start("relay")
        sampler = _sampler(stack)
        sampler.start()
        start = time.monotonic()
        while _unsent(stack) and time.monotonic() - start < options.timeout and stack.alive():
            time.sleep(0.05)
        relay_seconds = time.monotonic() - start
        relay_stats = sampler.stop()
        result: dict[str, Any] = {
            "scenario": name, "namespace": stack.namespace, "requests": total, "seed_seconds": round(seeded, 1),
            "relay": {"messages": total - _unsent(stack), "seconds": round(relay_seconds, 2),
                      "per_second": round((total - _unsent(stack)) / max(relay_seconds, 1e-9), 1),
                      "cpu_seconds": round(relay_stats["relay"].cpu_seconds, 2),
                      "peak_rss_mb": round(relay_stats["relay"].peak_rss_mb, 1),
                      "rabbitmq_cpu_seconds": round(relay_stats["rabbitmq"].cpu_seconds, 2)
                      if "rabbitmq" in relay_stats else None},
        }
        if drain:
            say(options, f"{name}: {total} requests queued in RabbitMQ; starting workers and tracker")
            stack.start("tracker", "worker")
            sampler = _sampler(stack)
            sampler.start()
            start = time.monotonic()
            decided = _wait_decided(stack, bundles, options.timeout)
            seconds = time.monotonic() - start
            stats = sampler.stop()
            result["drain"] = {
                "bundles": decided, "seconds": round(seconds, 1),
                "requests_per_second": round(decided * len(service.steps) / max(seconds, 1e-9), 1),
                "bundles_per_second": round(decided / max(seconds, 1e-9), 1),
                "extrapolated_100k_seconds": round(100_000 / max(decided * len(service.steps) / seconds, 1e-9), 0),
                "timed_out": decided < bundles,
            }
            result.update(_process_figures(stats, decided))
        return result
    finally:
        stack.close()


def relay(options: Options) -> dict[str, Any]:
    return _backlog(options, name="relay", requests=options.relay_messages, drain=False)


def backlog(options: Options) -> dict[str, Any]:
    return _backlog(options, name="backlog", requests=options.backlog_requests, drain=True)


def _lookups(stack: Stack, options: Options, ids: list[str]) -> dict[str, Any]:
    random.shuffle(ids)
    drive(stack.url, stack.api_key, min(500, len(ids)), options.concurrency, reader(ids))  # warm-up
    return drive(stack.url, stack.api_key, options.lookups, options.concurrency, reader(ids)).summary()


def big_store(options: Options) -> dict[str, Any]:
    stack = Stack(_config(options))
    try:
        stack.prepare()
        service = stack.catalog.services["bench-fast"]
        client = seed.client_id(stack.engine)
        stack.start("serve")
        small_ids = seed.applications(stack.engine, service, 1000, client=client, keep_every=1)
        say(options, f"big-store: {options.lookups} lookups with 1,000 stored")
        small = _lookups(stack, options, list(small_ids))
        rest = options.big_store_rows - 1000
        say(options, f"big-store: seeding {rest} more applications ({len(service.steps)} requests each)")
        t0 = time.monotonic()
        keep = max(1, rest // 20_000)
        big_ids = seed.applications(stack.engine, service, rest, client=client, keep_every=keep)
        seeded = time.monotonic() - t0
        say(options, f"big-store: seeded in {seeded:.0f} s; {options.lookups} lookups with "
                     f"{options.big_store_rows} stored")
        sampler = _sampler(stack)
        sampler.start()
        big = _lookups(stack, options, big_ids + small_ids)
        stats = sampler.stop()
        return {"scenario": "big-store", "namespace": stack.namespace, "stored": options.big_store_rows, "seed_seconds": round(seeded, 1),
                "lookup_small": small, "lookup_big": big,
                "p99_ratio": round(big["p99_ms"] / max(small["p99_ms"], 1e-9), 2),
                "database_mb": _database_mb(stack), **_process_figures(stats, options.lookups, unit="lookup")}
    finally:
        stack.close()


def _database_mb(stack: Stack) -> float | None:
    if stack.database_url.startswith("sqlite:///"):
        path = Path(stack.database_url.removeprefix("sqlite:///"))
        return round(sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20, 1)
    return None


SCENARIOS = {"submit": submit, "fast": fast, "slow": slow, "mixed": mixed, "relay": relay,
             "backlog": backlog, "big-store": big_store, "ceiling": ceiling, "naive": naive}
