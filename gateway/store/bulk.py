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

from typing import Any, NamedTuple

from sqlalchemy import Connection, DateTime, insert
from sqlalchemy.pool import PoolProxiedConnection

from .engine import translate


class _Prepared(NamedTuple):
    sql: str  # one row's INSERT
    positional: bool
    processors: tuple[tuple[str, Any], ...]  # (key, bind processor or None), in the order of the binds
    head: str  # "INSERT INTO t (a, b) VALUES "
    row: str  # "(?, ?)"
    rows_per_statement: int  # 0: executemany
    shareable: tuple[Any, ...]  # per bind: what its processor's output depends on besides the value (DateTime), or None


def _encoded_once(process: Any, kind: Any, shared: dict[Any, Any]) -> Any:
    """``process``, remembering its output in ``shared`` per value object (by identity: the
    caller keeps the values alive as long as ``shared``) and ``kind`` of processor."""
    def once(value: Any) -> Any:
        key = (kind, id(value))
        try:
            return shared[key]
        except KeyError:
            encoded = shared[key] = process(value)
            return encoded
    return once


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
        processors = tuple((key, impl.bind_processor(dialect)) for key, impl in zip(keys, impls, strict=True))
        # A DateTime's bind processor (SQLite's text) depends on nothing but the value and its
        # storage format: one timestamp shared by several rows or columns is encoded once.
        shareable = tuple((type(impl), getattr(impl, "_storage_format", None))
                          if isinstance(impl, DateTime) and processor is not None else None
                          for impl, (_key, processor) in zip(impls, processors, strict=True))
        head, _, row = compiled.string.rpartition(" VALUES ")
        multirow = dialect.name == "sqlite" and dialect.paramstyle == "qmark" and row.startswith("(")
        prepared = _Prepared(compiled.string, compiled.positional, processors, head + " VALUES ", row,
                             max(1, self.SQLITE_MAX_VARIABLES // len(keys)) if multirow else 0, shareable)
        self._prepared[dialect] = prepared
        return prepared

    def encode(self, dialect: Any, rows: list[dict[str, Any]], shared: dict[Any, Any] | None = None) -> list[Any]:
        """``rows`` in the driver's form for ``dialect``: one tuple (or dict) of parameters each.

        ``shared``: a dict the caller passes to the ``encode`` calls of rows that share
        timestamp objects (and keeps no longer than those rows), so that each is encoded once.
        """
        prepared = self._prepared.get(dialect) or self._prepare(dialect)
        processors = prepared.processors
        if shared is not None and any(prepared.shareable):
            processors = tuple((k, p if kind is None else _encoded_once(p, kind, shared))
                               for (k, p), kind in zip(processors, prepared.shareable, strict=True))
        if prepared.positional:
            return [tuple([row[k] if p is None else p(row[k]) for k, p in processors]) for row in rows]
        return [{k: row[k] if p is None else p(row[k]) for k, p in processors} for row in rows]

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
                    sql = prepared.head + ", ".join([prepared.row] * len(chunk))
                    params = [value for row in chunk for value in row]
                    cursor.execute(sql, params)
            elif encoded:
                cursor.executemany(sql, params)
        except dialect.loaded_dbapi.Error as error:
            raise translate(error, dialect, sql, params) from error
        finally:
            cursor.close()
