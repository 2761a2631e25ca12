"""Migration 6: the front office's reference (the number on a citizen's receipt) is indexed,
so the operators' search by it no longer reads every application.  SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert, inspect, text

from gateway import clients
from gateway.catalog import load_catalog
from gateway.ops import queries
from gateway.store import make_engine, migrations
from gateway.store import tables as t

INDEX = "ix_applications_reference_known"


@pytest.fixture
def v5_engine(settings, monkeypatch):
    """A store as version 5 left it: no index on the applications' reference."""
    engine = make_engine(settings.database_url)
    with monkeypatch.context() as m:
        m.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:5])
        assert migrations.upgrade(engine) == [1, 2, 3, 4, 5]
    with engine.begin() as conn:  # version 1 creates the tables as they are defined now
        conn.execute(text(f"DROP INDEX {INDEX}"))
    yield engine
    engine.dispose()


def indexes(engine) -> set[str]:
    return {i["name"] for i in inspect(engine).get_indexes("applications")}


def store_applications(engine, count: int) -> None:
    moment = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        client = clients.create(conn, "front-office", ["submit"])[0].id
        conn.execute(insert(t.applications), [
            {"id": f"app_{i}", "client_id": client, "service": "business-startup", "service_version": "1",
             "status": "in_progress", "reference": f"MPP-JKT-2026-{i:06d}" if i % 2 else None, "data": {},
             "idempotency_key": None, "request_hash": "0" * 64, "cancel_requested": False,
             "created_at": moment, "updated_at": moment, "due_at": None} for i in range(count)])


def test_the_upgrade_adds_the_index_and_the_search_finds_a_receipt_number(v5_engine, settings):
    store_applications(v5_engine, 40)
    assert INDEX not in indexes(v5_engine)
    assert migrations.upgrade(v5_engine) == list(range(6, migrations.LATEST + 1))
    assert migrations.current_version(v5_engine) == migrations.LATEST
    assert INDEX in indexes(v5_engine)
    assert migrations.upgrade(v5_engine) == []  # again: nothing to do
    with v5_engine.connect() as conn:
        found = queries.search(conn, load_catalog(settings.config_dir), "MPP-JKT-2026-000007")
    assert [(r["id"], r["matched"]) for r in found["results"]] == [("app_7", "reference")]


def test_a_new_store_searches_a_reference_through_the_index(engine):
    assert INDEX in indexes(engine)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            plan = " ".join(row[-1] for row in conn.execute(text(
                "EXPLAIN QUERY PLAN SELECT id FROM applications WHERE id = 'x' OR reference = 'x'")))
        assert INDEX in plan and "SCAN applications" not in plan, plan
