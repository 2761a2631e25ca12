"""``python -m bench [SCENARIO...]``: run the benchmark scenarios and print a table (or ``--json``).

Each scenario starts a full stack of its own (namespace, store, processes), measures, and
cleans up after itself.  ``--repeat R`` runs each scenario R times and reports the best
run with the spread of the headline figure, since a shared machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from .report import headline, machine, table
from .scenarios import SCENARIOS, Options


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("scenarios", nargs="*", default=["fast"], metavar="SCENARIO",
                   help=f"one or more of: {', '.join(SCENARIOS)}, all (default: fast)")
    p.add_argument("-n", "--bundles", type=int, default=2000, help="bundles (or submissions) per run")
    p.add_argument("-c", "--concurrency", type=int, default=16, help="concurrent HTTP clients")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--web-workers", type=int, help="gunicorn workers (default: the gateway's own)")
    p.add_argument("--web-threads", type=int, help="gunicorn threads per worker (default: the gateway's own)")
    p.add_argument("--database-url", help="an admin URL of PostgreSQL (a database is created and dropped); "
                                          "default: a fresh SQLite file")
    p.add_argument("--backlog-requests", type=int, default=30_000,
                   help="queued requests of `backlog` (the issue's figure is 100000; the default is scaled down)")
    p.add_argument("--relay-messages", type=int, default=20_000, help="outbox rows of `relay`")
    p.add_argument("--big-store-rows", type=int, default=1_000_000, help="stored applications of `big-store`")
    p.add_argument("--lookups", type=int, default=5000, help="status lookups per measurement of `big-store`")
    p.add_argument("--rate-limit", default="0", help="SATUPINTU_RATE_LIMIT of the stack (default 0: off)")
    p.add_argument("--repeat", type=int, default=1, help="runs per scenario; the best is reported")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for a run to finish")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--keep", action="store_true", help="keep each run's folder (logs, SQLite file)")
    args = p.parse_args(argv)
    if "all" in args.scenarios:
        args.scenarios = list(SCENARIOS)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario {unknown[0]!r}; known: {', '.join(SCENARIOS)}, all")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    options = Options(bundles=args.bundles, concurrency=args.concurrency, workers=args.workers,
                      database_url=args.database_url, web_workers=args.web_workers, web_threads=args.web_threads,
                      backlog_requests=args.backlog_requests, relay_messages=args.relay_messages,
                      big_store_rows=args.big_store_rows, lookups=args.lookups, timeout=args.timeout,
                      rate_limit=args.rate_limit,
                      keep=args.keep, quiet=args.json)
    results = []
    for name in args.scenarios:
        runs = [SCENARIOS[name](options) for _ in range(args.repeat)]
        values = [headline(r)[1] for r in runs]
        best = max(range(len(runs)), key=lambda i: values[i] if headline(runs[i])[2] else -values[i])
        result = dict(runs[best])
        result["runs"] = len(runs)
        result["headline"] = {"metric": headline(runs[best])[0], "values": values}
        results.append(result)
    return {"machine": machine(), "results": results}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # SIGTERM unwinds like Ctrl-C, so every stack still stops its processes and deletes its queues.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(args)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
