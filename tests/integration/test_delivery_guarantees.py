"""Delivery guarantees on the real RabbitMQ and the sandbox agencies, roles in threads.

Retries end in dead letters that fail the request and replay completes it; a poison
message is stopped by the delivery limit; an open circuit breaker and a maintenance window
defer calls; heartbeats outlive long calls; a request that may have reached the agency is
looked up, never filed twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import uuid
from pathlib import Path

import pytest
import requests
from catalogs import reliability_catalog
from sqlalchemy import func, select
from support import sandbox_first, wait_until

TERMINAL = {"completed", "rejected", "failed", "cancelled"}


@pytest.fixture
def catalog(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request):  # noqa: ANN001, ANN201
    """The demo catalog with sub-second retry tiers and lookup-before-resend everywhere,
    read once the test's sandbox (if it has one) reported its ports."""
    from gateway.catalog import load_catalog
    sandbox_first(request)
    folder = reliability_catalog(tmp_path / "config", retry={"max_attempts": 3, "delays": [0.2, 0.5]},
                                 breaker={"failure_threshold": 100, "reset_after": 1})
    env["SATUPINTU_CONFIG"] = str(folder)
    monkeypatch.setenv("SATUPINTU_CONFIG", str(folder))
    monkeypatch.setenv("SATUPINTU_STATE_DIR", str(tmp_path / "state"))
    return load_catalog(folder)


@pytest.fixture
def agencies(sandbox):  # noqa: ANN001, ANN201
    """The sandbox, with the municipality deciding at once (no gateway to call back here)."""
    sandbox.faults("municipality", callback_url="")
    return sandbox


@pytest.fixture
def roles(settings, engine, broker):  # noqa: ANN001, ANN201
    """Start relay, tracker or worker in a thread of this process; all stopped afterwards."""
    from broker import breaker
    from broker.worker import Worker
    from core.settings import Settings
    from gateway.relay import Relay
    from gateway.tracker import Tracker
    breaker.reset_registry()
    running = []

    def start(role: str, catalog, **options):  # noqa: ANN001, ANN202
        common = {"amqp_urls": settings.amqp_urls, "namespace": settings.namespace}
        if role == "worker":
            component = Worker(catalog, Settings.from_env(), **options)  # the environment as the test left it
            component.start()
        elif role == "relay":
            component = Relay(engine, catalog, **common, **options)
        else:
            component = Tracker(engine, catalog, **common, **options)
        thread = threading.Thread(target=component.run, name=role, daemon=True)
        thread.start()
        running.append((component, thread))
        return component

    yield start
    for component, _thread in running:
        component.stop()
    for _component, thread in running:
        thread.join(30)
    breaker.reset_registry()


def with_agency(catalog, agency_id: str, **changes):  # noqa: ANN001, ANN201
    """The catalog with one agency's settings changed (same queues and delay tiers)."""
    agencies = dict(catalog.agencies)
    agencies[agency_id] = dataclasses.replace(agencies[agency_id], **changes)
    return dataclasses.replace(catalog, agencies=agencies)


def submit(client, auth, example, name: str = "PT Andal Jaya") -> str:  # noqa: ANN001
    body = dict(example, data=dict(example["data"], company=dict(example["data"]["company"], name=name)))
    response = client.post("/v1/applications", json=body, headers={**auth, "Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def application(engine, app_id: str):  # noqa: ANN001, ANN201
    from gateway.store import tables as t
    with engine.connect().execution_options(readonly=True) as conn:
        app = conn.execute(select(t.applications).where(t.applications.c.id == app_id)).first()
        reqs = {r.step: r for r in conn.execute(select(t.requests).where(t.requests.c.application_id == app_id))}
        events = conn.execute(select(t.events).where(t.events.c.application_id == app_id)
                              .order_by(t.events.c.id)).all()
    return app, reqs, events


def decided(engine, app_id: str):  # noqa: ANN001, ANN201
    app, reqs, events = application(engine, app_id)
    return (app, reqs, events) if app.status in TERMINAL else None


def test_transient_failures_end_in_a_dead_letter_and_replay_completes_the_bundle(
        engine, catalog, agencies, roles, client, auth, example):  # noqa: ANN001
    from core.domain.errors import NotFound
    from gateway import dead_letters
    agencies.faults("company-registry", failure_rate=1.0)
    for role in ("relay", "tracker", "worker"):
        roles(role, catalog)
    app_id = submit(client, auth, example)

    app, reqs, events = wait_until(lambda: decided(engine, app_id), 60, message="the bundle to fail")
    assert app.status == "failed"
    company = reqs["company"]
    assert company.status == "failed" and "503" in company.reason
    assert [e.type for e in events].count("retry") == 2  # attempts 1 and 2 retried, 3 was the last
    open_letters = dead_letters.list_open(engine)
    assert [(d["request_id"], d["attempts"]) for d in open_letters] == [(company.id, 3)]
    assert all(r.status == "skipped" for step, r in reqs.items() if step != "company")

    agencies.faults("company-registry", failure_rate=0)
    assert dead_letters.replay(engine, catalog, ids=[open_letters[0]["id"]], cause="test") == [open_letters[0]["id"]]
    with pytest.raises(NotFound):  # replaying twice never sends twice
        dead_letters.replay(engine, catalog, ids=[open_letters[0]["id"]], cause="test")
    app, reqs, events = wait_until(lambda: decided(engine, app_id), 60, message="the replayed bundle")
    assert app.status == "completed"
    assert "replay" in [e.type for e in events]
    stats = agencies.stats("company-registry")
    assert stats["unique_request_ids"] == 1 and stats["duplicates"] == 0, stats
    assert dead_letters.list_open(engine) == []


def test_a_message_that_keeps_crashing_workers_is_dead_lettered_by_the_delivery_limit(
        engine, catalog, broker, roles, client, auth, example):  # noqa: ANN001
    from broker.topology import DELIVERY_LIMIT
    from gateway import dead_letters
    roles("relay", catalog)
    roles("tracker", catalog)
    app_id = submit(client, auth, example)
    queue = broker.names.agency_queue("company-registry")
    wait_until(lambda: broker.depth(queue) == 1, 30, message="the dispatch message")
    # A worker that dies on this message every time: take it, never ack it, give it back.
    for _ in range(DELIVERY_LIMIT + 1):
        method = wait_until(lambda: broker.channel.basic_get(queue)[0], 30, message="a delivery")
        broker.channel.basic_nack(method.delivery_tag, requeue=True)
    app, reqs, _events = wait_until(lambda: decided(engine, app_id), 30, message="the bundle to fail")
    assert app.status == "failed"
    assert "delivery_limit" in reqs["company"].reason
    assert [d["request_id"] for d in dead_letters.list_open(engine)] == [reqs["company"].id]


def test_an_open_breaker_defers_calls_until_the_agency_is_back(
        engine, catalog, agencies, roles, client, auth, example):  # noqa: ANN001
    from broker import breaker
    # Attempts are plenty: while the breaker is open, messages wait without spending them.
    tuned = with_agency(catalog, "company-registry", failure_threshold=2, reset_after=0.5, max_attempts=20)
    agencies.faults("company-registry", outage_seconds=3)
    roles("relay", tuned)
    roles("tracker", tuned)
    roles("worker", tuned)
    ids = [submit(client, auth, example, name=f"PT Sabar {i}") for i in range(5)]
    seen = set()

    def all_done() -> bool:
        seen.add(breaker.states().get("company-registry"))
        return all(decided(engine, app_id) for app_id in ids)
    wait_until(all_done, 90, interval=0.05, message="the bundles to be decided")
    assert "open" in seen
    assert breaker.states()["company-registry"] == "closed"
    for app_id in ids:
        app, _reqs, events = application(engine, app_id)
        assert app.status == "completed"
    deferred = [e for app_id in ids for e in application(engine, app_id)[2] if e.type == "deferred"]
    assert deferred and all("circuit breaker" in e.detail["reason"] for e in deferred)
    assert agencies.stats("company-registry")["duplicates"] == 0


def test_a_maintenance_window_defers_calls_until_it_ends(engine, catalog, agencies, roles, client, auth, example):  # noqa: ANN001
    now = dt.datetime.now(dt.UTC)
    window = {"from": (now - dt.timedelta(minutes=1)).isoformat(), "until": (now + dt.timedelta(seconds=2)).isoformat()}
    tuned = with_agency(catalog, "company-registry", maintenance=(window,))
    for role in ("relay", "tracker", "worker"):
        roles(role, tuned)
    app_id = submit(client, auth, example)
    app, _reqs, events = wait_until(lambda: decided(engine, app_id), 60, message="the bundle")
    assert app.status == "completed"
    deferred = [e for e in events if e.type == "deferred"]
    assert deferred and "maintenance" in deferred[0].detail["reason"]


def test_heartbeats_outlive_agency_calls_longer_than_the_heartbeat(
        engine, catalog, agencies, roles, client, auth, example, monkeypatch):  # noqa: ANN001
    monkeypatch.setenv("SATUPINTU_AMQP_HEARTBEAT", "2")
    agencies.faults("company-registry", latency_ms=6000)
    roles("relay", catalog)
    roles("tracker", catalog)
    worker = roles("worker", catalog)
    ids = [submit(client, auth, example, name=f"PT Lambat {i}") for i in range(3)]
    wait_until(lambda: all(decided(engine, a) for a in ids), 90, message="the slow bundles")
    assert {application(engine, a)[0].status for a in ids} == {"completed"}
    assert worker.connections == 1  # the broker never dropped the worker for a missed heartbeat
    stats = agencies.stats("company-registry")
    assert stats["duplicates"] == 0 and stats["unique_request_ids"] == 3, stats


def test_only_calls_still_running_after_announce_after_publish_a_sent_event(
        engine, catalog, agencies, roles, client, auth, example):  # noqa: ANN001
    agencies.faults("company-registry", latency_ms=1500)
    roles("relay", catalog)
    roles("tracker", catalog)
    roles("worker", catalog, announce_after=0.5)
    app_id = submit(client, auth, example)
    # While the registry holds the call, the request already shows ``sent``.
    wait_until(lambda: application(engine, app_id)[1]["company"].status == "sent", 30,
               message="the slow company call to be announced")
    app, _reqs, events = wait_until(lambda: decided(engine, app_id), 60, message="the bundle")
    assert app.status == "completed"
    by_step: dict[str, list] = {}
    for e in events:
        if e.step and e.type in ("attempt", "outcome"):
            by_step.setdefault(e.step, []).append(e)
    # The slow call: announced, then its outcome; the others (answered at once): the outcome only.
    assert [(e.type, e.status) for e in by_step["company"]] == [("attempt", "sent"), ("outcome", "approved")]
    # The others: never announced when they answered well within announce_after (on a loaded
    # machine a call the sandbox answers at once can still take longer, and then may be).
    assert set(by_step) == {"company", "tax", "permit", "social"}
    for step, evs in by_step.items():
        outcome = evs[-1]
        assert outcome.type == "outcome", (step, evs)
        announced = [e.type for e in evs[:-1]] == ["attempt"]
        assert announced or len(evs) == 1, (step, [e.type for e in evs])
        if outcome.detail["duration_ms"] < 250:  # well under announce_after (0.5 s): never announced
            assert not announced, (step, outcome.detail["duration_ms"])
    company_outcome = by_step["company"][-1]
    assert company_outcome.detail["duration_ms"] >= 1500
    assert company_outcome.detail["started_at"] == by_step["company"][0].detail["started_at"]
    assert all(r.attempts == 1 for r in application(engine, app_id)[1].values())


def test_a_redelivered_request_is_looked_up_not_filed_again(
        engine, catalog, broker, agencies, roles, client, auth, example):  # noqa: ANN001
    roles("relay", catalog)
    roles("tracker", catalog)
    app_id = submit(client, auth, example)
    queue = broker.names.agency_queue("company-registry")
    wait_until(lambda: broker.depth(queue) == 1, 30, message="the dispatch message")
    company = application(engine, app_id)[1]["company"]
    # A worker filed it, then died before acking: the agency has it, the queue gives it back.
    channel = broker.connection.channel()
    method = wait_until(lambda: channel.basic_get(queue)[0], 30, message="a delivery")
    filed = requests.post(agencies.urls["company-registry"] + "/companies", timeout=5,
                          headers={"Idempotency-Key": company.id}, json={"company_name": "PT Andal Jaya"})
    assert filed.status_code == 201
    channel.close()  # the "dead" worker's unacked delivery goes back, marked redelivered
    del method
    roles("worker", catalog)
    app, reqs, _events = wait_until(lambda: decided(engine, app_id), 60, message="the bundle")
    assert app.status == "completed"
    assert reqs["company"].agency_reference == filed.json()["company_number"]
    stats = agencies.stats("company-registry")
    assert stats["requests"] == 1 and stats["duplicates"] == 0, stats
    assert stats["by_operation"].get("lookup_company", 0) >= 1, stats


def test_rows_a_dead_relay_published_are_looked_up_not_filed_twice(
        engine, catalog, broker, agencies, roles, client, auth, example):  # noqa: ANN001
    from broker.publisher import Publisher
    from gateway.store import records
    ids = [submit(client, auth, example, name=f"PT Dua Kali {i}") for i in range(3)]
    # A relay publishes the rows, confirmed, then dies before marking them sent.
    with engine.begin() as conn:
        rows = records.claim_outbox(conn, limit=100, lease=dt.timedelta(seconds=0.5))
    publisher = Publisher(broker.connection.channel())
    for row in rows:
        publisher.publish(broker.names.exchange(row.exchange), row.routing_key, row.body, row.headers)
    roles("relay", catalog, lease=0.5)  # claims them again once the lease ran out
    roles("tracker", catalog)
    roles("worker", catalog)
    wait_until(lambda: all(decided(engine, a) for a in ids), 60, message="the bundles")
    assert {application(engine, a)[0].status for a in ids} == {"completed"}
    stats = agencies.stats("company-registry")
    assert stats["unique_request_ids"] == 3 and stats["duplicates"] == 0, stats


def test_duplicate_and_late_outcome_events_change_nothing(engine, catalog, broker, roles, client, auth, example):  # noqa: ANN001
    from broker import messages
    from broker.publisher import Publisher
    from gateway.store import tables as t
    roles("tracker", catalog)
    app_id = submit(client, auth, example)
    company = application(engine, app_id)[1]["company"]
    body = {"request_id": company.id, "application_id": app_id, "service": "business-startup",
            "step": "company", "agency": "company-registry"}
    approved = messages.status_event(body, type="outcome", status="approved", reference="AHU-0000000001")
    late = messages.status_event(body, type="outcome", status="accepted", reference="AHU-0000000002")
    publisher = Publisher(broker.connection.channel())
    for event in (approved, approved, late):
        publisher.publish(broker.names.status, messages.status_key(event), event)
    wait_until(lambda: any(e.detail.get("ignored") for e in application(engine, app_id)[2]), 30,
               message="the late event to be recorded as ignored")
    _app, reqs, events = application(engine, app_id)
    assert reqs["company"].status == "approved" and reqs["company"].agency_reference == "AHU-0000000001"
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(t.events)
                             .where(t.events.c.event_id == approved["event_id"])).scalar()
    assert count == 1


def test_an_agencys_concurrency_bounds_its_calls_while_the_worker_holds_more_deliveries(
        engine, catalog, agencies, roles, client, auth, example):  # noqa: ANN001
    from broker.limits import prefetch
    assert prefetch(2) > 2  # deliveries beyond the concurrency wait for a slot in the worker
    tuned = with_agency(catalog, "company-registry", concurrency=2)
    agencies.faults("company-registry", latency_ms=300)
    for role in ("relay", "tracker", "worker"):
        roles(role, tuned)
    ids = [submit(client, auth, example, name=f"PT Antre {i}") for i in range(6)]
    wait_until(lambda: all(decided(engine, a) for a in ids), 60, message="the bundles")
    assert {application(engine, a)[0].status for a in ids} == {"completed"}
    stats = agencies.stats("company-registry")
    assert stats["peak_in_flight"] == 2, stats  # never more than its concurrency, and all of it used
    assert stats["duplicates"] == 0 and stats["unique_request_ids"] == 6, stats
    # Each outcome records the call as the agency saw it, from the moment it had a slot:
    # the recorded calls never overlap more than the concurrency (had the time spent
    # waiting for a slot been counted, a third call would overlap the two before it).
    calls = [(dt.datetime.fromisoformat(e.detail["started_at"]).timestamp(), e.detail["duration_ms"] / 1000)
             for a in ids for e in application(engine, a)[2] if e.type == "outcome" and e.step == "company"]
    assert len(calls) == 6
    edges = sorted([(start + 0.001, 1) for start, _ in calls] + [(start + took - 0.001, -1) for start, took in calls])
    running = peak = 0
    for _moment, change in edges:
        running += change
        peak = max(peak, running)
    assert peak == 2, calls
