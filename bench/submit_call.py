"""``python -m bench.submit_call``: the gateway's CPU per submission, in-process.

Builds the gateway's Flask app on a fresh SQLite store with the bench catalog
(``bench/catalog``, service ``bench-fast``), creates one API client, and pushes ``-n``
``POST /v1/applications`` straight through the WSGI app -- no HTTP server, no client --
from 1 thread and from ``--threads`` threads, each with a fresh ``Idempotency-Key``, as
``python -m bench submit`` sends them.  The rate limit is off (as in the bench) unless
``--rate-limit`` is given.  The figure is the process's CPU time (``time.process_time``,
all threads) per submission: robust on a shared machine, where wall time is not.  For
scale, the same loop against ``GET /healthz`` (routing and a JSON answer, no auth) is
measured too: what Flask alone costs per request here.

    .venv/bin/python -m bench.submit_call [-n 3000] [--threads 8] [--runs 5] [--rate-limit 0]

Each run starts on a new store, so a run's WAL and tables are the same size as the others'.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / "bench" / "catalog"


def _body(i: int) -> bytes:
    """What ``bench submit`` sends (``bench/scenarios.py`` ``_fast_body``)."""
    return json.dumps({"service": "bench-fast", "reference": f"BENCH-{i}",
                       "data": {"name": f"PT Bench {i:07d}", "nik": "3171012345670123"}}).encode()


def _environ(method: str, path: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """A WSGI environ as gunicorn hands it over, for one request."""
    environ = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
        "wsgi.multiprocess": True, "wsgi.run_once": False, "HTTP_HOST": "127.0.0.1:8080",
    }
    if body:
        environ["CONTENT_TYPE"] = "application/json"
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


class _Store:
    """A fresh SQLite store with the bench catalog, an API client and the gateway app on it."""

    def __init__(self, rate_limit: float):
        from core.settings import Settings
        from gateway import clients
        from gateway.api import create_app
        from gateway.catalog import load_catalog
        from gateway.store import make_engine
        from gateway.store.migrations import upgrade

        self.workdir = Path(tempfile.mkdtemp(prefix="satupintu-submit-bench-"))
        url = f"sqlite:///{self.workdir / 'satupintu.db'}"
        self.engine = make_engine(url)
        upgrade(self.engine)
        settings = dataclasses.replace(Settings(), database_url=url, config_dir=str(CATALOG),
                                       rate_limit=rate_limit, rate_burst=max(1, int(rate_limit * 2)))
        with self.engine.begin() as conn:
            _client, key = clients.create(conn, "bench", list(clients.SCOPES))
        self.app = create_app(settings, catalog=load_catalog(CATALOG), engine=self.engine)
        self.auth = f"Bearer {key}"

    def close(self) -> None:
        self.engine.dispose()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _call(app: Any, environ: dict[str, Any]) -> str:
    status: list[str] = []

    def start_response(s: str, _headers: list[tuple[str, str]], _exc_info: Any = None) -> Callable:
        status.append(s)
        return lambda _data: None
    chunks = app(environ, start_response)
    try:
        for _chunk in chunks:
            pass
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return status[0]


def _measure(app: Any, environs: list[dict[str, Any]], threads: int, expect: str) -> float:
    """CPU ms per request of ``environs`` spread over ``threads`` threads."""
    shares = [environs[i::threads] for i in range(threads)]
    errors: list[str] = []
    start = threading.Barrier(threads + 1)

    def work(share: list[dict[str, Any]]) -> None:
        start.wait()
        for environ in share:
            status = _call(app, environ)
            if not status.startswith(expect):
                errors.append(status)
    workers = [threading.Thread(target=work, args=(share,)) for share in shares]
    for w in workers:
        w.start()
    cpu0 = time.process_time()
    start.wait()
    for w in workers:
        w.join()
    cpu = time.process_time() - cpu0
    if errors:
        raise SystemExit(f"{len(errors)} unexpected answers, e.g. {errors[0]}")
    return cpu * 1000 / len(environs)


def run(*, submissions: int, threads: int, rate_limit: float) -> dict[str, float]:
    """One run on a new store: CPU ms per submission (1 thread, ``threads`` threads) and per /healthz."""
    store = _Store(rate_limit)
    try:
        def submissions_environs(first: int) -> list[dict[str, Any]]:
            return [_environ("POST", "/v1/applications", _body(i),
                             {"Authorization": store.auth, "Idempotency-Key": uuid.uuid4().hex})
                    for i in range(first, first + submissions)]
        _measure(store.app, submissions_environs(10**6)[:200], 1, "202")  # warm-up: caches, pool, validator
        one = _measure(store.app, submissions_environs(0), 1, "202")
        many = _measure(store.app, submissions_environs(submissions), threads, "202")
        health = _measure(store.app, [_environ("GET", "/healthz", b"", {}) for _ in range(submissions)], 1, "200")
        return {"one_thread": one, "threads": many, "healthz": health}
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.submit_call", description=__doc__.splitlines()[0])
    p.add_argument("-n", "--submissions", type=int, default=3000, help="submissions per measurement")
    p.add_argument("--threads", type=int, default=8, help="submitting threads of the second measurement")
    p.add_argument("--runs", type=int, default=5, help="runs, each on a new store; medians are reported")
    p.add_argument("--rate-limit", type=float, default=0.0,
                   help="SATUPINTU_RATE_LIMIT requests/s (default 0: off, as in the bench)")
    p.add_argument("--json", action="store_true", help="one JSON line instead of text")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = []
    for i in range(args.runs):
        r = run(submissions=args.submissions, threads=args.threads, rate_limit=args.rate_limit)
        results.append(r)
        if not args.json:
            print(f"run {i + 1}: {r['one_thread']:.3f} ms CPU per submission (1 thread), "
                  f"{r['threads']:.3f} ms ({args.threads} threads); GET /healthz {r['healthz']:.3f} ms")
    median = {k: statistics.median(r[k] for r in results) for k in results[0]}
    if args.json:
        print(json.dumps({"runs": results, "median": median}))
    else:
        print(f"median of {args.runs}: {median['one_thread']:.3f} ms CPU per submission (1 thread), "
              f"{median['threads']:.3f} ms ({args.threads} threads); GET /healthz {median['healthz']:.3f} ms; "
              f"{args.submissions} submissions per measurement")
    return 0


if __name__ == "__main__":
    sys.exit(main())
