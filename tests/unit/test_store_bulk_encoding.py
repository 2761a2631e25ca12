"""``BulkInsert.encode``: a timestamp object in several rows and columns, written out once
by the SQLite shortcut, stores exactly the bytes SQLAlchemy's own ``insert`` stores."""

import datetime as dt

import pytest
from sqlalchemy import JSON, Column, DateTime, MetaData, String, Table, insert, text
from sqlalchemy.dialects import postgresql, sqlite

from gateway.store.bulk import BulkInsert
from gateway.store.engine import make_engine

metadata = MetaData()


def twin(name):
    return Table(name, metadata, Column("id", String, primary_key=True), Column("body", JSON),
                 Column("created_at", DateTime(timezone=True)), Column("updated_at", DateTime(timezone=True)),
                 Column("plain_at", DateTime), Column("odd_at", sqlite.DATETIME(storage_format="%(year)04d/%(day)02d")))


by_sqlalchemy, by_bulk = twin("by_sqlalchemy"), twin("by_bulk")
COLUMNS = ("id", "body", "created_at", "updated_at", "plain_at", "odd_at")


def rows():
    moment = dt.datetime(2026, 3, 4, 5, 6, 7, 89, tzinfo=dt.UTC)
    other = dt.datetime(2026, 3, 4, 5, 6, 7, 90, tzinfo=dt.UTC)
    return [{"id": "a", "body": {"k": [1, "é"]}, "created_at": moment, "updated_at": moment, "plain_at": moment,
             "odd_at": moment},  # one object in four columns, one of them of another format
            {"id": "b", "body": {}, "created_at": other, "updated_at": moment, "plain_at": None, "odd_at": other}]


def test_shared_timestamps_store_the_bytes_sqlalchemy_stores(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'bytes.db'}")
    metadata.create_all(engine)
    written = rows()
    with engine.begin() as conn:
        conn.execute(insert(by_sqlalchemy), written)
        bulk = BulkInsert(by_bulk, COLUMNS)
        bulk.write(conn, bulk.encode(engine.dialect, written))
    with engine.connect() as conn:
        select = "SELECT id, body, created_at, updated_at, plain_at, odd_at, typeof(plain_at) FROM {} ORDER BY id"
        expected = conn.execute(text(select.format("by_sqlalchemy"))).all()
        assert conn.execute(text(select.format("by_bulk"))).all() == expected
    assert expected[0].odd_at == "2026/04" and expected[0].created_at.endswith(".000089")
    engine.dispose()


def plain(encoded):
    """Encoded rows, comparable: psycopg's ``Json`` wrappers have no equality of their own."""
    def value(v):
        return ("Json", v.obj) if type(v).__name__ == "Json" else v
    return [{k: value(v) for k, v in row.items()} if isinstance(row, dict) else tuple(map(value, row))
            for row in encoded]


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.psycopg.dialect()], ids=["sqlite", "postgresql"])
def test_a_remembered_timestamp_text_is_never_given_to_another_value(dialect):
    bulk = BulkInsert(by_bulk, COLUMNS)
    written = rows()
    # Equal values in objects of their own, and the rows in the other order: a text kept for
    # one object must be what a fresh encoding of the next value gives, never the last one's.
    fresh = [{k: dt.datetime.fromisoformat(v.isoformat()) if isinstance(v, dt.datetime) else v
              for k, v in row.items()} for row in reversed(written)]
    assert plain(bulk.encode(dialect, written)) == plain(bulk.encode(dialect, list(reversed(fresh))))
    assert plain(bulk.encode(dialect, fresh)) == list(reversed(plain(bulk.encode(dialect, written))))
