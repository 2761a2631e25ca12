"""Inserting rows of fixed columns straight through the database driver.

``Connection.execute`` of even a prebuilt statement cost more than the inserts themselves on
the submission path: an execution context, a cache lookup, parameters rebuilt through
``construct_params``, a result.  ``BulkInsert`` applies what SQLAlchemy would apply -- the
SQL it compiles for the dialect (PostgreSQL's bind casts included) and each column's own
bind processor (SQLite's DATETIME text, JSON) -- and raises the driver's errors as
SQLAlchemy's (``IntegrityError`` for a used Idempotency-Key).  SQLAlchemy still builds every
statement and pools the connection.

Encoding (``encode``) and writing (``write``) are apart so that the encoding -- most of the
Python an insert costs -- happens before the write transaction begins, and so that the rows
of several submissions can go in one statement (``gateway/store/group_commit.py``).
"""

from __future__ import annotations

import datetime as dt
from itertools import chain
from operator import itemgetter
from typing import Any, NamedTuple

from sqlalchemy import JSON, Connection, insert
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.pool import PoolProxiedConnection

from .engine import translate
from .records import json_text


class _Prepared(NamedTuple):
    sql: str  # one row's INSERT
    positional: bool
    head: str  # "INSERT INTO t (a, b) VALUES "
    row: str  # "(?, ?)"
    rows_per_statement: int  # 0: executemany
    keys: tuple[str, ...]  # the binds' keys, in their order
    values: Any  # row -> the tuple of its values for ``keys`` (an ``itemgetter``)
    processing: tuple[tuple[int, Any], ...]  # (position, bind processor) of the binds that have one
    statements: dict[int, str]  # row count -> the multi-row INSERT, made once per count


def _faster(impl: Any, process: Any, dialect: Any) -> Any:
    """``process``, the bind processor of ``impl`` for ``dialect``, with a shortcut for the
    values the store writes most that gives exactly what ``process`` gives for them.

    A JSON column of a dialect that serialises with ``json.dumps`` (no ``json_serializer`` on
    the engine, no string processor after it: SQLite) gets the prepared ``records.json_text``
    for a dict; SQLite's DATETIME in its default storage format gets a positional ``%`` for a
    ``datetime`` (the last one remembered), not a ``%`` through a dict of seven fields.  Anything else (None, ``JSON.NULL``,
    a ``date``) goes to ``process`` itself.
    """
    if process is None:
        return None
    if (isinstance(impl, JSON) and getattr(dialect, "_json_serializer", None) is None
            and not dialect.supports_native_json_serialization
            and impl._str_impl.bind_processor(dialect) is None and not impl.none_as_null):
        def json_column(value: Any, dumps: Any = json_text) -> Any:
            return dumps(value) if type(value) is dict else process(value)
        return json_column
    if isinstance(impl, SQLITE_DATETIME) and impl._storage_format == SQLITE_DATETIME._storage_format:
        return _sqlite_datetime(process)
    return process


# The last datetime the SQLite shortcut wrote out, and its text: rows of one submission share
# timestamps (a new application's in 5 columns, each event's in 2), so most are written out
# once without a memo passed around.  One tuple, swapped whole: threads that interleave only
# miss it; the object is held here, so its id cannot be reused while it is compared.
_last_sqlite_datetime: tuple[Any, str] = (object(), "")


def _sqlite_datetime(process: Any) -> Any:
    def sqlite_datetime(value: Any, datetime: type = dt.datetime) -> Any:
        global _last_sqlite_datetime
        last = _last_sqlite_datetime
        if last[0] is value:
            return last[1]
        if type(value) is not datetime:
            return process(value)
        # SQLAlchemy's default storage format, positionally: half the time of an f-string here.
        text = "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031
            value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond)
        _last_sqlite_datetime = (value, text)
        return text
    return sqlite_datetime


def _multirow(prepared: _Prepared, count: int) -> str:
    """The INSERT of ``count`` rows, kept: the same string object each time, whose hash the
    driver's statement cache then does not compute again (nor the text joined again)."""
    sql = prepared.statements[count] = prepared.head + ", ".join([prepared.row] * count)
    return sql


class BulkInsert:
    """One table's ``INSERT`` of fixed columns, compiled once per dialect.

    On SQLite the rows go in multi-row ``VALUES`` statements (cached by the driver per row
    count): an ``executemany`` steps once per row, and each step lets go of the GIL while the
    write lock is held -- a hand-over to another thread that the lock holder, and every writer
    queued behind it, then waits out.  psycopg pipelines an ``executemany`` by itself.
    """

    SQLITE_MAX_VARIABLES = 999  # SQLite's limit before 3.32; later ones allow 32,766

    def __init__(self, table: Any, columns: tuple[str, ...]):
        self.table, self.columns = table, columns
        self._prepared: dict[Any, _Prepared] = {}

    def _prepare(self, dialect: Any) -> _Prepared:
        # inline(): no RETURNING of generated keys, which nothing here reads.
        compiled = insert(self.table).inline().compile(dialect=dialect, column_keys=list(self.columns))
        if set(compiled.binds) != set(self.columns):
            raise ValueError(f"{self.table.name}: INSERT binds {sorted(compiled.binds)}, not {sorted(self.columns)}")
        keys = tuple(compiled.positiontup) if compiled.positional else self.columns
        impls = [self.table.c[key].type.dialect_impl(dialect) for key in keys]
        processors = [_faster(impl, impl.bind_processor(dialect), dialect) for impl in impls]
        head, _, row = compiled.string.rpartition(" VALUES ")
        multirow = dialect.name == "sqlite" and dialect.paramstyle == "qmark" and row.startswith("(")
        values = itemgetter(*keys) if len(keys) > 1 else (lambda row, key=keys[0]: (row[key],))
        prepared = _Prepared(compiled.string, compiled.positional, head + " VALUES ", row,
                             max(1, self.SQLITE_MAX_VARIABLES // len(keys)) if multirow else 0,
                             keys, values, tuple((i, p) for i, p in enumerate(processors) if p is not None), {})
        self._prepared[dialect] = prepared
        return prepared

    def encode(self, dialect: Any, rows: list[dict[str, Any]]) -> list[Any]:
        """``rows`` in the driver's form for ``dialect``: one tuple (or dict) of parameters each.
        (Timestamps shared by several rows are written out once by ``_sqlite_datetime``.)"""
        prepared = self._prepared.get(dialect) or self._prepare(dialect)
        processing = prepared.processing
        # The values of a row in one C call, then only the binds with a processor rewritten.
        get, encoded = prepared.values, []
        for row in rows:
            values = get(row)
            if processing:
                values = list(values)
                for i, process in processing:
                    values[i] = process(values[i])
            encoded.append(tuple(values))
        if prepared.positional:
            return encoded
        keys = prepared.keys
        return [dict(zip(keys, values)) for values in encoded]

    def write(self, conn: Connection, encoded: list[Any]) -> None:
        """Insert rows ``encode`` made for ``conn``'s dialect, in ``conn``'s transaction."""
        self.write_driver(conn.dialect, conn.connection, encoded)

    def write_driver(self, dialect: Any, connection: PoolProxiedConnection, encoded: list[Any]) -> None:
        """Insert rows ``encode`` made for ``dialect`` on a driver ``connection`` (in a
        transaction of ``engine.driver_transaction`` or a ``Connection``'s)."""
        prepared = self._prepared.get(dialect) or self._prepare(dialect)
        cursor = connection.cursor()
        sql, params = prepared.sql, encoded
        try:
            if prepared.rows_per_statement:
                for at in range(0, len(encoded), prepared.rows_per_statement):
                    chunk = encoded[at:at + prepared.rows_per_statement]
                    sql = prepared.statements.get(len(chunk)) or _multirow(prepared, len(chunk))
                    params = list(chain.from_iterable(chunk))
                    cursor.execute(sql, params)
            elif encoded:
                cursor.executemany(sql, params)
        except dialect.loaded_dbapi.Error as error:
            raise translate(error, dialect, sql, params) from error
        finally:
            cursor.close()
