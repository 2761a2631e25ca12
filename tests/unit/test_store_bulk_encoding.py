"""``BulkInsert.encode`` with ``shared``: a timestamp object in several rows and columns is
encoded once, and the stored bytes are exactly what SQLAlchemy's own ``insert`` stores."""

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
        bulk.write(conn, bulk.encode(engine.dialect, written, {}))
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
def test_encoding_with_or_without_sharing_is_the_same(dialect):
    bulk = BulkInsert(by_bulk, COLUMNS)
    written = rows()
    shared = {}
    assert plain(bulk.encode(dialect, written, shared)) == plain(bulk.encode(dialect, written))
    if dialect.name == "sqlite":  # 10 timestamps encoded: moment, other and None in the default format,
        assert len(shared) == 5  # moment and other in odd_at's
