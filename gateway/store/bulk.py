"""Inserting rows of fixed columns straight through the database driver.

``Connection.execute`` of even a prebuilt statement cost more than the inserts themselves on
the submission path: an execution context, a cache lookup, parameters rebuilt through
``construct_params``, a result.  ``BulkInsert`` applies what SQLAlchemy would apply -- the
SQL it compiles for the dialect (PostgreSQL's bind casts included) and each column's own
bind processor (SQLite's DATETIME text, JSON) -- and raises the driver's errors as
SQLAlchemy's (``IntegrityError`` for a used Idempotency-Key).  SQLAlchemy still builds every
statement and owns the connection and the transaction.

Encoding (``encode``) and writing (``write``) are apart so that the encoding -- most of the
Python an insert costs -- happens before the write transaction begins, and so that the rows
of several submissions can go in one statement (``gateway/store/group_commit.py``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import Connection, insert
from sqlalchemy.exc import DBAPIError


class _Prepared(NamedTuple):
    sql: str  # one row's INSERT
    positional: bool
    processors: tuple[tuple[str, Any], ...]  # (key, bind processor or None), in the order of the binds
    head: str  # "INSERT INTO t (a, b) VALUES "
    row: str  # "(?, ?)"
    rows_per_statement: int  # 0: executemany


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
        processors = tuple((key, self.table.c[key].type.dialect_impl(dialect).bind_processor(dialect))
                           for key in keys)
        head, _, row = compiled.string.rpartition(" VALUES ")
        multirow = dialect.name == "sqlite" and dialect.paramstyle == "qmark" and row.startswith("(")
        prepared = _Prepared(compiled.string, compiled.positional, processors, head + " VALUES ", row,
                             max(1, self.SQLITE_MAX_VARIABLES // len(keys)) if multirow else 0)
        self._prepared[dialect] = prepared
        return prepared

    def encode(self, dialect: Any, rows: list[dict[str, Any]]) -> list[Any]:
        """``rows`` in the driver's form for ``dialect``: one tuple (or dict) of parameters each."""
        prepared = self._prepared.get(dialect) or self._prepare(dialect)
        processors = prepared.processors
        if prepared.positional:
            return [tuple([row[k] if p is None else p(row[k]) for k, p in processors]) for row in rows]
        return [{k: row[k] if p is None else p(row[k]) for k, p in processors} for row in rows]

    def write(self, conn: Connection, encoded: list[Any]) -> None:
        """Insert rows ``encode`` made for ``conn``'s dialect."""
        dialect = conn.dialect
        prepared = self._prepared.get(dialect) or self._prepare(dialect)
        cursor = conn.connection.cursor()
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
            raise DBAPIError.instance(sql, params, error, dialect.loaded_dbapi.Error, dialect=dialect) from error
        finally:
            cursor.close()
