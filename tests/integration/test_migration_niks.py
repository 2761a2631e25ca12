"""Migration 4 on a store that already holds applications: ``application_niks`` is created,
then back-filled in batches (keyset pagination by id, each batch its own transaction), and
the version recorded only once the back-fill is complete.  SQLite and PostgreSQL alike."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import event, insert, inspect, select

from core import masking
from core.domain.errors import StoreError
from gateway import clients
from gateway.store import make_engine, migrations, nik_index
from gateway.store import tables as t


@pytest.fixture
def old_engine(settings, monkeypatch):
    """A store migrated only to version 3, as the previous release left it."""
    engine = make_engine(settings.database_url)
    with monkeypatch.context() as m:
        m.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])
        assert migrations.upgrade(engine) == [1, 2, 3]
    yield engine
    engine.dispose()


def nik_of(i: int) -> str:
    return f"3171{i:012d}"


def data_of(i: int) -> dict:
    """Every third application has no NIK; every fifth names a second one, once in free text."""
    if i % 3 == 0:
        return {"company": {"name": f"PT {i}"}}
    data = {"applicant": {"nik": nik_of(i)}}
    if i % 5 == 0:
        data["spouse"] = {"nik": nik_of(i + 1_000_000), "note": f"married to {nik_of(i)}"}
    return data


def store_applications(engine, count: int, *, start: int = 0) -> list[str]:
    """``count`` applications written as the previous release wrote them: no NIK rows."""
    with engine.begin() as conn:
        client = conn.execute(select(t.clients.c.id).limit(1)).scalar()
        if client is None:
            client = clients.create(conn, "front-office", ["submit"])[0].id
        moment = dt.datetime.now(dt.UTC)
        rows = [{"id": f"app_{(i * 7919) % 100_003:08d}{i:024x}", "client_id": client, "service": "business-startup",
                 "service_version": "1", "status": "in_progress", "reference": None, "data": data_of(i),
                 "idempotency_key": None, "request_hash": "0" * 64, "cancel_requested": False,
                 "created_at": moment, "updated_at": moment, "due_at": None} for i in range(start, start + count)]
        conn.execute(insert(t.applications), rows)
    return [r["id"] for r in rows]


def expected(ids: list[str], start: int = 0) -> set[tuple[str, str]]:
    want = set()
    for i, app_id in enumerate(ids, start):
        want |= {(app_id, masking.nik_hash(n)) for n in masking.niks_in(data_of(i))}
    return want


def stored(engine) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(select(t.application_niks))}


def test_upgrading_a_store_with_applications_back_fills_their_nik_hashes(old_engine):
    ids = store_applications(old_engine, 2_345)  # three batches of 1,000, the last one short
    assert migrations.current_version(old_engine) == 3
    with pytest.raises(StoreError, match=f"version 3, this code needs {migrations.LATEST}"):
        migrations.require_current(old_engine)
    assert migrations.upgrade(old_engine) == list(range(4, migrations.LATEST + 1))
    assert migrations.current_version(old_engine) == migrations.LATEST
    rows = stored(old_engine)
    assert rows == expected(ids)
    assert len(rows) == 2 * len([i for i in range(2_345) if i % 3 and i % 5 == 0]) + len(
        [i for i in range(2_345) if i % 3 and i % 5])
    plain = {n for i in range(2_345) for n in masking.niks_in(data_of(i))}
    assert all(len(h) == 64 and h not in plain for _app, h in rows)


def test_the_back_fill_reads_batch_by_batch_from_where_the_last_one_stopped(engine):
    old_engine = engine
    ids = store_applications(old_engine, 25)
    statements = []

    def record(_conn, _cursor, statement, parameters, _context, _many):
        if statement.lstrip().upper().startswith("SELECT") and "applications" in statement:
            statements.append(statement.upper())
    event.listen(old_engine, "before_cursor_execute", record)
    try:
        read = nik_index.rebuild(old_engine, masking.nik_hashes, batch=4)
    finally:
        event.remove(old_engine, "before_cursor_execute", record)
    assert read == 25 and stored(old_engine) == expected(ids)
    pages = [s for s in statements if "LIMIT" in s]
    assert len(pages) == 7 + 1  # six full pages, one of 1, and the empty one that ends it
    assert all("WHERE APPLICATIONS.ID >" in s and "ORDER BY APPLICATIONS.ID" in s for s in pages)  # keyset


def test_an_interrupted_back_fill_leaves_version_3_and_the_next_upgrade_finishes_it(old_engine, monkeypatch):
    ids = store_applications(old_engine, 1_500)
    calls, real = [], masking.nik_hashes

    def failing(data):
        calls.append(1)
        if len(calls) > 1_200:
            raise RuntimeError("the machine went down")
        return real(data)
    with monkeypatch.context() as m:
        m.setattr(masking, "nik_hashes", failing)
        with pytest.raises(RuntimeError):
            migrations.upgrade(old_engine)
    assert migrations.current_version(old_engine) == 3
    assert inspect(old_engine).has_table("application_niks") and len(stored(old_engine)) > 0  # the first batch
    assert migrations.upgrade(old_engine) == list(range(4, migrations.LATEST + 1))
    assert stored(old_engine) == expected(ids)


def test_applications_a_previous_gateway_writes_after_the_upgrade_are_caught_by_rehash_niks(old_engine, capsys):
    from gateway.cli import main
    before = store_applications(old_engine, 10)
    migrations.upgrade(old_engine)
    during = store_applications(old_engine, 10, start=10)  # a gateway of the previous release, still running
    assert stored(old_engine) == expected(before)
    assert main(["db", "rehash-niks"]) == 0
    assert "rehashed the NIKs of 20 application(s)" in capsys.readouterr().out
    assert stored(old_engine) == expected(before) | expected(during, start=10)


def test_a_fresh_store_gets_every_migration_at_once(engine):
    assert migrations.current_version(engine) == migrations.LATEST
    assert inspect(engine).has_table("application_niks")
    assert stored(engine) == set()
