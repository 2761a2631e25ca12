"""The submission path's shortcuts change no stored byte: a new application's rows, encoded
by ``BulkInsert`` (prepared JSON text, SQLite's timestamps written out positionally and once)
and hash-chained through the prepared canonical JSON, hold exactly what SQLAlchemy's own
inserts store for the same rows and what ``json.dumps`` hashes, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import JSON, DateTime, insert, text
from sqlalchemy.dialects import postgresql, sqlite

from core import masking
from gateway import clients
from gateway.applications import _REQUEST_COLUMNS, _NewApplication, body_hash
from gateway.catalog import load_catalog
from gateway.store import bulk, records
from gateway.store import tables as t
from gateway.store.group_commit import group_commit

BENCH_CATALOG = Path(__file__).resolve().parents[2] / "bench" / "catalog"

# Columns compared, per table: all but the ids the database numbers itself.
COLUMNS = {
    "applications": [c.name for c in t.applications.columns],
    "requests": [c.name for c in t.requests.columns],
    "events": [c.name for c in t.events.columns if c.name != "id"],
    "outbox": [c.name for c in t.outbox.columns if c.name != "id"],
    "application_niks": [c.name for c in t.application_niks.columns],
}

BODIES = [
    pytest.param({"service": "bench-fast", "reference": "BENCH-1",
                  "data": {"name": "PT Bench 0000001", "nik": "3171012345670123"}}, id="plain"),
    pytest.param({"service": "bench-fast", "reference": "Rüdiger \u00e9\u4e2d\u6587 \U0001f600 \"q\" \\ \n\t",
                  "data": {"name": "Çağrı Öztürk \u4e2d\u6587 \U0001f600 </script>", "nik": "3171 0123 4567 0123",
                           "extra": {"nested": [1, 2.5, -0.0, 1e100, True, False, None, {"deep": [{"x": "\u2028"}]}],
                                     "nik_spouse": 3171012345670999, "none": None, "empty": {}, "list": []}}},
                 id="unicode-nested-none"),
    pytest.param({"service": "bench-fast", "reference": None,
                  "data": {"name": "A", "nik": "no nik here", "z": 1, "a": "3171012345670123 and 3171012345670124"}},
                 id="no-reference-unsorted-keys"),
]


def _raw_rows(conn: Any, app_id: str, table: str) -> list[tuple[Any, ...]]:
    """The stored values as the database holds them: the driver's own values on SQLite
    (text stays text, integers integers), each column's text on PostgreSQL."""
    postgres = conn.dialect.name == "postgresql"
    columns = ", ".join(f"CAST({c} AS TEXT)" if postgres else c for c in COLUMNS[table])
    where = {"outbox": "", "applications": " WHERE id = :app_id"}.get(table, " WHERE application_id = :app_id")
    order = {"events": "id", "outbox": "id", "requests": "step", "application_niks": "nik_hash"}.get(table, "id")
    return [tuple(r) for r in conn.execute(text(f"SELECT {columns} FROM {table}{where} ORDER BY {order}"),
                                           {"app_id": app_id} if where else {})]


def _stored(engine: Any, app_id: str) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {table: _raw_rows(conn, app_id, table) for table in COLUMNS}


def _write_with_sqlalchemy(engine: Any, new: _NewApplication) -> None:
    """The same rows through plain ``insert()`` statements, SQLAlchemy's own bind processing."""
    with engine.begin() as conn:
        conn.execute(insert(t.applications), [vars(new.app)])
        conn.execute(insert(t.requests), [{k: vars(r)[k] for k in _REQUEST_COLUMNS} for r in new.requests])
        conn.execute(insert(t.events), [dict(e) for e in new.events])
        if new.messages:
            conn.execute(insert(t.outbox), [dict(m) for m in new.messages])
        if new.niks:
            conn.execute(insert(t.application_niks), new.niks)


def _forget(engine: Any, app_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM application_niks WHERE application_id = :a"), {"a": app_id})
        conn.execute(text("DELETE FROM outbox"))
        conn.execute(text("DELETE FROM events WHERE application_id = :a"), {"a": app_id})
        conn.execute(text("DELETE FROM requests WHERE application_id = :a"), {"a": app_id})
        conn.execute(text("DELETE FROM applications WHERE id = :a"), {"a": app_id})


def _chain_by_json_dumps(events: list[dict[str, Any]]) -> list[str]:
    """The event hashes as ``records.event_hash`` has always made them, with ``json.dumps``."""
    prev, hashes = records.GENESIS, []
    for e in events:
        fields = {k: e[k] for k in ("event_id", "application_id", "request_id", "step", "type", "status",
                                    "detail", "cause")}
        fields["occurred_at"] = e["occurred_at"].isoformat().replace("+00:00", "Z")
        prev = hashlib.sha256((prev + json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                                 default=str)).encode()).hexdigest()
        hashes.append(prev)
    return hashes


@pytest.fixture
def submitter(engine):
    with engine.begin() as conn:
        client, _key = clients.create(conn, "bytes", list(clients.SCOPES))
    return client


@pytest.mark.parametrize("body", BODIES)
def test_a_submissions_rows_hold_the_bytes_sqlalchemy_stores(engine, submitter, body):
    service = load_catalog(BENCH_CATALOG).services[body["service"]]
    new = _NewApplication(service, submitter, body, "bytes-key", body_hash(body))
    group_commit(engine).write(new.writes(engine.dialect))
    by_submission = _stored(engine, new.app.id)
    _forget(engine, new.app.id)
    _write_with_sqlalchemy(engine, new)
    by_sqlalchemy = _stored(engine, new.app.id)
    assert by_submission == by_sqlalchemy
    assert [len(by_submission[table]) for table in COLUMNS] == [1, 3, 4, 3, len(new.niks)]
    assert [e["hash"] for e in new.events] == _chain_by_json_dumps(new.events)
    assert new.app.request_hash == hashlib.sha256(json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()).hexdigest()


def test_an_answer_and_its_rows_agree_on_every_timestamp(engine, submitter):
    body = BODIES[1].values[0]
    new = _NewApplication(load_catalog(BENCH_CATALOG).services["bench-fast"], submitter, body, None, body_hash(body))
    moment = new.app.created_at
    assert new.document["created_at"] == new.document["updated_at"] == moment.isoformat().replace("+00:00", "Z")
    assert {r["updated_at"] for r in new.document["requests"]} == {new.document["created_at"]}


# --- the pieces, against what they stand in for -------------------------------------------

class _Weird:
    def __str__(self) -> str:
        return "weird \u00e9"


VALUES = [
    {}, [], "", "plain", "\u00e9\u4e2d\U0001f600\x00\x1f\"\\/", 0, -1, 10**30, 1.5, -0.0, 1e-7, math.inf, -math.inf,
    math.nan, True, False, None, (1, "a"), {"b": 1, "a": [None, {"z": {}, "y": 2}]}, {1: "int key", 2.5: "float key",
                                                                                      False: "bool", None: "none"},
    {"u": "\u2028\u2029", "nested": [[[["deep"]]]]},
]


def _outcome(dumps: Any, value: Any) -> Any:
    try:
        return dumps(value)
    except Exception as exc:  # noqa: BLE001 -- the failure is the outcome compared
        return type(exc), str(exc)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_prepared_json_is_json_dumps(value):
    assert _outcome(records.json_text, value) == _outcome(json.dumps, value)
    assert _outcome(records.canonical, value) == _outcome(
        lambda v: json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str), value)


def test_prepared_json_fails_where_json_dumps_fails():
    loop: list[Any] = []
    loop.append(loop)
    for dumps in (records.json_text, records.canonical):
        with pytest.raises(ValueError, match="Circular"):
            dumps(loop)
    with pytest.raises(TypeError):
        records.json_text({"x": _Weird()})
    assert records.canonical({"x": _Weird(), "d": dt.date(2026, 1, 2)}) == '{"d":"2026-01-02","x":"weird \u00e9"}'


def test_prepared_json_still_works_after_a_failure():
    shared = {"a": 1}
    with pytest.raises(TypeError):
        records.json_text({"k": shared, "bad": object()})
    assert records.json_text({"k": shared, "again": shared}) == json.dumps({"k": shared, "again": shared})


DATETIMES = [dt.datetime(2026, 3, 4, 5, 6, 7, 89, tzinfo=dt.UTC), dt.datetime(2026, 12, 31, 23, 59, 59),
             dt.datetime(1, 1, 1), dt.datetime(999, 9, 9, 9, 9, 9, 999999),
             dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.timezone(dt.timedelta(hours=7))), dt.date(2026, 3, 4), None]


@pytest.mark.parametrize("column", [DateTime(timezone=True), DateTime(), sqlite.DATETIME(truncate_microseconds=True)],
                         ids=["aware", "naive", "truncated"])
def test_sqlite_timestamps_are_written_as_sqlalchemy_writes_them(column):
    dialect = sqlite.dialect()
    impl = column.dialect_impl(dialect)
    theirs = impl.bind_processor(dialect)
    ours = bulk._faster(impl, theirs, dialect)
    for value in DATETIMES + DATETIMES[::-1] + [DATETIMES[0]] * 2:  # the remembered one, and others in between
        assert ours(value) == theirs(value), value


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.psycopg.dialect()], ids=["sqlite", "postgresql"])
def test_json_columns_are_written_as_sqlalchemy_writes_them(dialect):
    impl = JSON().dialect_impl(dialect)
    theirs = impl.bind_processor(dialect)
    ours = bulk._faster(impl, theirs, dialect)
    if dialect.name == "postgresql":
        assert ours is theirs  # psycopg's Json adapter, untouched
        return
    for value in VALUES + [JSON.NULL]:
        assert ours(value) == theirs(value), value


def test_json_columns_of_an_engine_with_its_own_serializer_are_left_alone():
    dialect = sqlite.dialect(json_serializer=lambda value: json.dumps(value, ensure_ascii=False))
    impl = JSON().dialect_impl(dialect)
    theirs = impl.bind_processor(dialect)
    assert bulk._faster(impl, theirs, dialect) is theirs


def test_iso_is_what_it_always_was():
    def before(value):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    for value in [d for d in DATETIMES if type(d) is not dt.date] + [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]:
        assert records.iso(value) == before(value)


def test_nik_hashes_are_the_keyed_hashes_of_each_searchable_nik(monkeypatch):
    monkeypatch.setenv("SATUPINTU_NIK_HASH_KEY", "k\u00e9y")
    data = {"nik": "3171 0123-4567.0123", "note": "3171012345670999, 3171012345670123", "n": [{"nik_x": 3171012345670888}],
            "short": "123"}
    want = sorted(hmac.new("k\u00e9y".encode(), nik.encode(), hashlib.sha256).hexdigest()
                  for nik in {"3171012345670123", "3171012345670999", "3171012345670888"})
    assert masking.nik_hashes(data, "k\u00e9y") == want
    assert masking.nik_hash(" 3171012345670123 ", "k\u00e9y") == hmac.new("k\u00e9y".encode(), b"3171012345670123",
                                                               hashlib.sha256).hexdigest()
    assert masking.nik_hashes({"name": "x"}) == []


def test_a_document_of_stored_rows_writes_out_each_timestamp():
    created = dt.datetime(2026, 1, 2, 3, 4, 5, 6)  # naive, as SQLite hands them back
    app = SimpleNamespace(id="app_1", service="s", status="completed", reference=None, created_at=created,
                          updated_at=dt.datetime(2026, 1, 2, 3, 4, 6), due_at=None)
    requests = [SimpleNamespace(step="a", agency="x", id="req_1", status="approved", agency_reference=None,
                                reason=None, attempts=1, updated_at=created)]
    document = records.application_document(app, requests)
    assert (document["created_at"], document["updated_at"]) == ("2026-01-02T03:04:05.000006Z", "2026-01-02T03:04:06Z")
    assert document["requests"][0]["updated_at"] == "2026-01-02T03:04:05.000006Z"
