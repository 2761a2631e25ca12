"""Many processes of each role on one PostgreSQL and one broker (DESIGN §8).

3 gateways (``satupintu serve``, each on its own port), 2 relays, 4 workers and 2 trackers
share one PostgreSQL database of their own and one namespace on the local RabbitMQ.
1,000 demo bundles go in round robin over the gateways; every one must complete, every
agency must see each request exactly once (the relays' ``FOR UPDATE SKIP LOCKED`` claims
never publish a row twice, the workers never file twice), and every application's
history must hold each step's outcome (the two trackers lose no event and keep each
application's hash chain intact while they interleave).

Always on PostgreSQL, whatever ``SATUPINTU_TEST_DATABASE`` says: several processes on
several machines is what PostgreSQL is for.  Skipped when no PostgreSQL answers, unless
``SATUPINTU_REQUIRE_POSTGRESQL=1`` (CI), which makes that a failure.
"""

from __future__ import annotations

import os
import time

import pytest
import requests
from scale_support import (
    SANDBOX_AGENCIES,
    Fleet,
    bundle,
    delete_namespace,
    postgres_database,
    sandbox_stats,
    start_sandbox,
    step_outcomes_missing,
    submit_all,
    undecided,
    wait_ready,
)
from sqlalchemy import func, select
from support import free_port, wait_until

pytestmark = [pytest.mark.scale, pytest.mark.timeout(300)]

# SATUPINTU_SCALE_BUNDLES makes a quicker local run; CI runs the full 1,000.
BUNDLES = int(os.environ.get("SATUPINTU_SCALE_BUNDLES", "1000"))
GATEWAYS, RELAYS, WORKERS, TRACKERS = 3, 2, 4, 2


@pytest.fixture
def database_url():
    """Overrides the suite's store: this module always runs on PostgreSQL."""
    with postgres_database() as url:
        yield url


@pytest.fixture
def fleet(tmp_path, env, catalog):
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(logs)
    yield fleet
    fleet.stop_all()
    delete_namespace([env["SATUPINTU_AMQP_URL"]], env["SATUPINTU_NAMESPACE"], catalog)


def test_a_thousand_bundles_through_many_processes_of_each_role_complete_once_each(
        env, engine, sandbox_urls, make_key, example, fleet):
    from gateway.audit import verify
    from gateway.store import tables as t

    binds = [f"127.0.0.1:{free_port()}" for _ in range(GATEWAYS)]
    gateways = [f"http://{bind}" for bind in binds]
    base = dict(os.environ, **env, SATUPINTU_WEB_WORKERS="1")
    # The municipality's callbacks go to one gateway; submissions to all three.
    start_sandbox(fleet, sandbox_urls, base, callback_url=f"{gateways[-1]}/v1/agencies/municipality/callbacks",
                  decision_delay=0.2)
    for i, bind in enumerate(binds, 1):
        fleet.role(f"gateway-{i}", "serve", dict(base, SATUPINTU_BIND=bind))
    for i in range(1, RELAYS + 1):
        fleet.role(f"relay-{i}", "relay", base)
    for i in range(1, WORKERS + 1):
        fleet.role(f"worker-{i}", "worker", base)
    for i in range(1, TRACKERS + 1):
        fleet.role(f"tracker-{i}", "tracker", base)
    wait_ready(fleet, gateways)

    key = make_key("submit", "read")
    started = time.monotonic()
    ids = submit_all(gateways, key, [bundle(example, i) for i in range(BUNDLES)])
    assert len(set(ids)) == BUNDLES
    submitted = time.monotonic()

    def all_decided() -> bool:
        fleet.check_alive()
        return undecided(engine, ids) == 0
    wait_until(all_decided, 200, interval=2, message=f"{BUNDLES} bundles to be decided")
    # Reported, never asserted (timings belong in bench/).
    print(f"\n{BUNDLES} bundles: submitted in {submitted - started:.1f} s, "
          f"all decided after {time.monotonic() - started:.1f} s")

    with engine.connect() as conn:
        by_status = dict(conn.execute(select(t.applications.c.status, func.count())
                                      .where(t.applications.c.id.in_(ids)).group_by(t.applications.c.status)).all())
        requests_by_status = dict(conn.execute(select(t.requests.c.status, func.count())
                                               .group_by(t.requests.c.status)).all())
        without_reference = conn.execute(select(t.requests.c.agency, func.count()).where(
            t.requests.c.agency_reference.is_(None)).group_by(t.requests.c.agency)).all()
        example_history = []
        if without_reference:
            request = conn.execute(select(t.requests).where(t.requests.c.agency_reference.is_(None))).first()
            example_history = [(e.type, e.status, e.detail, e.cause) for e in conn.execute(
                select(t.events).where(t.events.c.request_id == request.id).order_by(t.events.c.id))]
        unsent = conn.execute(select(func.count()).select_from(t.outbox).where(t.outbox.c.sent_at.is_(None))).scalar()
    assert by_status == {"completed": BUNDLES}, fleet.tail()
    assert requests_by_status == {"approved": BUNDLES * len(SANDBOX_AGENCIES)}
    assert without_reference == [], example_history
    assert unsent == 0

    # Each agency filed each request exactly once.
    for agency, stats in sandbox_stats(sandbox_urls).items():
        assert stats["unique_request_ids"] == BUNDLES, (agency, stats)
        assert stats["duplicates"] == 0, (agency, stats)

    # No lost events: every approved step and every completion is in the history, and the
    # histories the two trackers wrote side by side still chain.
    assert step_outcomes_missing(engine, ids) == []
    report = verify(engine)
    assert report.broken is None, report.broken

    # Any gateway answers for any application (they share the store).
    for i, app_id in enumerate(ids[:: BUNDLES // 10]):
        doc = requests.get(f"{gateways[i % GATEWAYS]}/v1/applications/{app_id}", timeout=10,
                           headers={"Authorization": f"Bearer {key}"}).json()
        assert doc["status"] == "completed"
        assert {r["status"] for r in doc["requests"]} == {"approved"}
