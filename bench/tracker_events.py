"""The tracker's CPU and SQL statements per event, in-process (no RabbitMQ, no workers).

Seeds ``--bundles`` applications of the bench's three-step service with every request
queued, as a submission leaves them, then feeds the status events the worker would publish
for them (an outcome per request, optionally preceded by a slow call's ``attempt``/``sent``),
JSON-encoded, through ``Tracker._on_status`` -- which decodes them and applies them in
batches of ``--batch`` with ``Tracker._flush``, as the consumer does.  Events of one window
of bundles arrive interleaved, as outcomes of concurrent calls do.

    .venv/bin/python -m bench.tracker_events [--database-url URL] [--bundles N] [--batch N]
    .venv/bin/python -m bench.tracker_events --broker amqp://guest:guest@127.0.0.1:5672/%2F

``--broker``: the events are published (before the clock starts) to ``<ns>.status`` of a
namespace of the bench's own on that RabbitMQ, and ``Tracker.run`` consumes them --
pika's delivery handling and acks included -- until every one is acked; the namespace's
queues and exchanges are deleted at the end.

``--database-url``: none for a fresh SQLite file; a PostgreSQL admin URL
(``postgresql://postgres@127.0.0.1:5432/postgres``) to create and drop a database of our
own.  Reports CPU ms per event (the process's CPU time around the feed, so the database
server's own CPU is not in it) and statements per event (every statement SQLAlchemy sends
to the driver, an ``executemany`` counting once; ``BEGIN``/``COMMIT`` not included).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import func, select, update

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / "bench" / "catalog"


class _Channel:
    """Stands in for pika's channel: the tracker only acks, nacks and rejects."""

    def __init__(self) -> None:
        self.acked = self.nacked = self.rejected = 0

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.acked = tag

    def basic_nack(self, tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self.nacked += 1

    def basic_reject(self, tag: int, requeue: bool = False) -> None:
        self.rejected += 1


def _database(admin: str | None, workdir: Path) -> tuple[str, Any]:
    if not admin:
        return f"sqlite:///{workdir / 'satupintu.db'}", lambda: None
    import psycopg
    plain = admin.replace("postgresql+psycopg://", "postgresql://")
    name = "sp_trk_" + uuid.uuid4().hex[:10]
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return f"{plain.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://')}/{name}", drop


def _events(engine: Any, app_ids: list[str], *, sent: bool, window: int, rng: random.Random) -> list[bytes]:
    """The worker's status events for every request of ``app_ids``, JSON-encoded, in arrival order."""
    from gateway.store import tables as t
    with engine.connect() as conn:
        rows = list(conn.execute(select(t.requests.c.id, t.requests.c.application_id, t.requests.c.step,
                                        t.requests.c.agency).order_by(t.requests.c.application_id)))
    by_app: dict[str, list[Any]] = {}
    for row in rows:
        by_app.setdefault(row.application_id, []).append(row)
    out: list[bytes] = []
    for start in range(0, len(app_ids), window):
        keyed: list[tuple[float, dict[str, Any]]] = []
        for app_id in app_ids[start:start + window]:
            for r in by_app[app_id]:
                base = {"request_id": r.id, "application_id": app_id, "service": "bench-fast", "step": r.step,
                        "agency": r.agency, "attempt": 1, "origin": "worker-bench", "reason": None,
                        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())}
                at = rng.random()
                if sent:
                    keyed.append((at, dict(base, event_id=uuid.uuid4().hex, type="attempt", status="sent",
                                           reference=None, output=None,
                                           detail={"started_at": base["occurred_at"]})))
                number = f"CR-{uuid.uuid4().hex[:10]}"
                keyed.append((at + rng.random() * 0.5, dict(
                    base, event_id=uuid.uuid4().hex, type="outcome", status="approved", reference=number,
                    output={"company_number": number},
                    detail={"started_at": base["occurred_at"], "duration_ms": round(rng.uniform(5, 50), 1)})))
        keyed.sort(key=lambda item: item[0])
        out.extend(json.dumps(ev).encode() for _k, ev in keyed)
    return out


def _publish(broker: str, names: Any, agencies: list[Any], raw: list[bytes]) -> None:
    """Declare the namespace and put ``raw`` on its tracker queue, confirmed."""
    import pika

    from broker.topology import declare_for
    connection = pika.BlockingConnection(pika.URLParameters(broker))
    try:
        channel = connection.channel()
        declare_for(channel, names, agencies)
        channel.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                     headers={"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"})
        for body in raw:
            channel.basic_publish(names.status, "bench-fast.bench.approved", body, props)
    finally:
        connection.close()


def _delete_namespace(broker: str, names: Any, agencies: list[Any]) -> None:
    import pika

    from broker.topology import delete_for
    connection = pika.BlockingConnection(pika.URLParameters(broker))
    try:
        delete_for(connection.channel(), names, agencies)
    finally:
        connection.close()


def _consume(tracker: Any, total: int) -> int:
    """Run ``tracker`` on the broker until ``total`` deliveries were applied and acked; returns
    how many were."""
    received = applied = 0
    on_status, flush = tracker._on_status, tracker._flush

    def counting_status(*args: Any) -> None:
        nonlocal received
        received += 1
        on_status(*args)

    def counting_flush(channel: Any) -> None:
        nonlocal applied
        pending = len(tracker._batch)
        flush(channel)
        applied += pending
        if applied >= total:
            tracker.stop()
    tracker._on_status, tracker._flush = counting_status, counting_flush
    tracker.run()
    return applied


def run(admin: str | None, *, bundles: int, batch: int, sent: bool, webhook: bool, window: int,
        seed: int, broker: str | None = None) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="satupintu-tracker-bench-"))
    url, drop = _database(admin, workdir)
    engine = None
    try:
        from gateway import clients
        from gateway.catalog import load_catalog
        from gateway.store import make_engine
        from gateway.store import tables as t
        from gateway.store.migrations import upgrade
        from gateway.tracker import Tracker

        from . import seed as seeding
        engine = make_engine(url)
        upgrade(engine)
        catalog = load_catalog(CATALOG)
        with engine.begin() as conn:
            client, _key = clients.create(conn, "bench", list(clients.SCOPES))
            if webhook:  # set directly: clients.create would resolve the host (nothing is sent)
                conn.execute(update(t.clients).where(t.clients.c.id == client.id)
                             .values(webhook_url="https://client.example/hooks"))
        service = catalog.services["bench-fast"]
        app_ids = seeding.applications(engine, service, bundles, client=client.id, status="in_progress",
                                       request_status="queued", keep_every=1)
        raw = _events(engine, app_ids, sent=sent, window=window, rng=random.Random(seed))

        statements = 0

        def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            nonlocal statements
            if statement.split(None, 1)[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK"):
                statements += 1
        sa_event.listen(engine, "before_cursor_execute", count)
        namespace = f"bench-trk-{uuid.uuid4().hex[:8]}"
        urls = (broker,) if broker else ()
        tracker = Tracker(engine, catalog, amqp_urls=urls, namespace=namespace, batch=batch)
        channel = _Channel()
        props = SimpleNamespace(headers={"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"}, message_id=None)
        with engine.connect():  # warm the pool: the consumer's connection is open already
            pass
        agencies = list(catalog.agencies.values())
        try:
            if broker:
                _publish(broker, tracker.names, agencies, raw)
            started_cpu, started_wall = time.process_time(), time.perf_counter()
            if broker:
                channel.acked = _consume(tracker, len(raw))
            else:
                for tag, body in enumerate(raw, start=1):
                    tracker._on_status(channel, SimpleNamespace(delivery_tag=tag), props, body)
                tracker._flush(channel)
            cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started_wall
        finally:
            if broker:
                _delete_namespace(broker, tracker.names, agencies)
        sa_event.remove(engine, "before_cursor_execute", count)

        with engine.connect() as conn:
            approved = conn.execute(select(func.count()).where(t.requests.c.status == "approved")).scalar()
            completed = conn.execute(select(func.count()).where(t.applications.c.status == "completed")).scalar()
        if approved != 3 * bundles or completed != bundles or channel.nacked or channel.acked != len(raw):
            raise SystemExit(f"wrong end state: {approved} approved, {completed} completed, "
                             f"{channel.nacked} nacks, acked up to {channel.acked} of {len(raw)}")
        return {"events": len(raw), "cpu_ms_per_event": cpu * 1000 / len(raw),
                "wall_ms_per_event": wall * 1000 / len(raw), "statements_per_event": statements / len(raw)}
    finally:
        if engine is not None:
            engine.dispose()
        drop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tracker_events", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL admin URL (a database is created and dropped); default: SQLite")
    parser.add_argument("--bundles", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=50, help="events per tracker transaction (default 50)")
    parser.add_argument("--sent", action="store_true", help="an attempt/sent event before each outcome")
    parser.add_argument("--webhook", action="store_true", help="the client has a webhook URL")
    parser.add_argument("--window", type=int, default=20, help="bundles whose events arrive interleaved")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--broker", default=None,
                        help="an AMQP URL: the events go through RabbitMQ and Tracker.run (default: in-process)")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of text")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args.database_url, bundles=args.bundles, batch=args.batch, sent=args.sent, webhook=args.webhook,
                 window=args.window, seed=args.seed, broker=args.broker)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['events']} events: {result['cpu_ms_per_event']:.3f} ms CPU per event "
              f"({result['wall_ms_per_event']:.3f} ms wall), {result['statements_per_event']:.2f} statements per event")


if __name__ == "__main__":
    main()
