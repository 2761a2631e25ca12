"""Migration 5: agency references are indexed by themselves, and only once an agency gave
one.  The index of version 4 on (agency, agency_reference) goes; the operators' search by
agency reference uses the new one.  SQLite and PostgreSQL alike."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert, inspect, text, update

from gateway import clients
from gateway.catalog import load_catalog
from gateway.ops import queries
from gateway.store import make_engine, migrations
from gateway.store import tables as t

OLD, NEW = "ix_requests_agency_reference", "ix_requests_agency_reference_known"


@pytest.fixture
def v4_engine(settings, monkeypatch):
    """A store as version 4 left it: the requests' index on (agency, agency_reference)."""
    engine = make_engine(settings.database_url)
    with monkeypatch.context() as m:
        m.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:4])
        assert migrations.upgrade(engine) == [1, 2, 3, 4]
    with engine.begin() as conn:  # version 1 creates the tables as they are defined now
        conn.execute(text(f"DROP INDEX {NEW}"))
        conn.execute(text(f"CREATE INDEX {OLD} ON requests (agency, agency_reference)"))
    yield engine
    engine.dispose()


def indexes(engine) -> set[str]:
    return {i["name"] for i in inspect(engine).get_indexes("requests")}


def store_requests(engine, count: int) -> None:
    moment = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        client = clients.create(conn, "front-office", ["submit"])[0].id
        conn.execute(insert(t.applications), [
            {"id": f"app_{i}", "client_id": client, "service": "business-startup", "service_version": "1",
             "status": "in_progress", "reference": None, "data": {}, "idempotency_key": None,
             "request_hash": "0" * 64, "cancel_requested": False, "created_at": moment, "updated_at": moment,
             "due_at": None} for i in range(count)])
        conn.execute(insert(t.requests), [
            {"id": f"req_{i}", "application_id": f"app_{i}", "step": "register", "agency": "company-registry",
             "operation": "register_company", "status": "sent", "agency_reference": None, "attempts": 1,
             "updated_at": moment} for i in range(count)])


def test_the_upgrade_replaces_the_index_and_the_search_finds_a_reference(v4_engine, settings):
    store_requests(v4_engine, 30)
    assert OLD in indexes(v4_engine) and NEW not in indexes(v4_engine)
    assert migrations.upgrade(v4_engine) == list(range(5, migrations.LATEST + 1))
    assert migrations.current_version(v4_engine) == migrations.LATEST
    assert OLD not in indexes(v4_engine) and NEW in indexes(v4_engine)
    with v4_engine.begin() as conn:  # the agency answers after the upgrade
        conn.execute(update(t.requests).where(t.requests.c.id == "req_7").values(agency_reference="AHU-0000000007"))
    with v4_engine.connect() as conn:
        found = queries.search(conn, load_catalog(settings.config_dir), "AHU-0000000007")
    assert [(r["id"], r["matched"]) for r in found["results"]] == [("app_7", "agency_reference")]


def test_upgrading_again_changes_nothing(v4_engine):
    migrations.upgrade(v4_engine)
    assert migrations.upgrade(v4_engine) == []
    assert NEW in indexes(v4_engine)


def test_a_new_store_has_the_partial_index_only(engine):
    assert OLD not in indexes(engine) and NEW in indexes(engine)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            plan = " ".join(row[-1] for row in conn.execute(text(
                "EXPLAIN QUERY PLAN SELECT application_id FROM requests WHERE id = 'x' OR agency_reference = 'x'")))
        assert NEW in plan  # not a scan of every request
