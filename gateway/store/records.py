"""Reads and writes of the store, as small functions over an open connection.

Callers own the transaction (``with engine.begin() as conn``), so one request or one
batch of events is applied all-or-nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from core.domain.ids import uuid7_hex

from . import tables as t
from .engine import translate

GENESIS = "0" * 64
# PostgreSQL: each outbox write notifies this channel at commit, waking the relay at once.
OUTBOX_CHANNEL = "satupintu_outbox"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands back naive datetimes, which are UTC by construction."""
    if value is None:
        return None
    if value.tzinfo is dt.UTC:  # ``astimezone`` would hand back the value itself
        return value.isoformat().replace("+00:00", "Z")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def new_id(prefix: str) -> str:
    """``<prefix>_`` and a time-ordered id (``gateway/domain/ids.py``)."""
    return f"{prefix}_{uuid7_hex()}"


def json_dumper(*, sort_keys: bool = False, separators: tuple[str, str] = (", ", ": "), ensure_ascii: bool = True,
                default: Callable[[Any], Any] | None = None) -> Callable[[Any], str]:
    """``json.dumps`` with these options, prepared once: the same text for every value.

    ``json.dumps`` with any option builds a ``JSONEncoder`` per call, and each call goes
    through ``encode`` and ``iterencode`` to the C encoder; ~17 calls per submission made
    those layers ~1 us each.  This calls what ``JSONEncoder.encode`` ends in, the C encoder,
    and is the plain ``JSONEncoder(...).encode`` where the C accelerator is missing.

    The C encoder is built once, without a circular-reference memo: the memo is what made a
    fresh encoder (and a dict of every container's id) necessary per call, ~0.5 us each.  A
    value that refers to itself then ends in ``RecursionError`` rather than going on forever,
    and only then is it encoded again as ``check_circular`` does, to fail as ``json.dumps``
    fails (``ValueError: Circular reference detected``, or its ``RecursionError`` for a value
    nested too deep).
    """
    encoder = json.JSONEncoder(sort_keys=sort_keys, separators=separators, ensure_ascii=ensure_ascii,
                               default=default)
    make = json.encoder.c_make_encoder
    if make is None:
        return encoder.encode
    string = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    item_separator, key_separator = separators
    on_unknown = encoder.default  # ``default``, or the method that raises TypeError
    unchecked = make(None, on_unknown, string, None, key_separator, item_separator, sort_keys, False, True)

    def dumps(value: Any) -> str:
        if isinstance(value, str):
            return string(value)
        try:
            return "".join(unchecked(value, 0))
        except RecursionError:
            checked = make({}, on_unknown, string, None, key_separator, item_separator, sort_keys, False, True)
            return "".join(checked(value, 0))
    return dumps


# ``json.dumps(value)``: what SQLAlchemy's JSON type stores when the engine has no
# ``json_serializer`` (``store/bulk.py``), and the API's answers.
json_text = json_dumper()
_canonical = json_dumper(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canonical(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 as is: the form hashed (request bodies, the event chain)."""
    return _canonical(value)


# --- statements run on the driver's cursor (the tracker's batch) -----------------------------

class DriverStatement:
    """A statement SQLAlchemy compiles once per dialect and parameter names, run on the driver.

    What ``Connection.execute`` does for it -- the dialect's SQL (bind casts included), each
    bind's processor, each result column's processor, the driver's errors raised as
    SQLAlchemy's -- without its per-call machinery (an execution context, a cache key,
    ``construct_params`` per row, a result with ``fetchone`` per row), which cost the tracker's
    batch more than its statements.  It runs in ``conn``'s transaction, on its driver
    connection; SQLAlchemy's cursor events do not see it.  Every bind must be given: a column
    default SQLAlchemy would fill in is refused when compiled.
    """

    def __init__(self, statement: Any):
        self.statement = statement
        self._compiled: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def _prepare(self, dialect: Any, keys: tuple[str, ...]) -> Any:
        compiled = self.statement.compile(dialect=dialect, column_keys=list(keys))
        processors = {name: bind.type.dialect_impl(dialect).bind_processor(dialect)
                      for bind, name in compiled.bind_names.items()}
        missing = sorted(name for bind, name in compiled.bind_names.items()
                         if name not in keys and not bind.expanding)
        if missing:
            raise ValueError(f"no parameters for {missing} in {compiled.string!r}")
        order = tuple(compiled.positiontup) if compiled.positional else tuple(processors)
        prepared = (compiled, tuple((name, processors[name]) for name in order))
        self._compiled[(dialect, keys)] = prepared
        return prepared

    def _run(self, conn: Connection, sql: str, params: Any, many: bool) -> Any:
        dialect = conn.dialect
        cursor = conn.connection.driver_connection.cursor()
        try:
            if many:
                cursor.executemany(sql, params)
            else:
                cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else None
        except dialect.loaded_dbapi.Error as error:
            raise translate(error, dialect, sql, params) from error
        finally:
            cursor.close()

    def executemany(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Run the statement once per row of ``rows``, which all name the same parameters."""
        if not rows:
            return
        keys = tuple(rows[0])
        compiled, processors = self._compiled.get((conn.dialect, keys)) or self._prepare(conn.dialect, keys)
        if compiled.positional:
            params: list[Any] = [tuple([row[k] if p is None else p(row[k]) for k, p in processors]) for row in rows]
        else:
            params = [{k: row[k] if p is None else p(row[k]) for k, p in processors} for row in rows]
        self._run(conn, compiled.string, params if len(params) > 1 else params[0], many=len(params) > 1)

    def rows(self, conn: Connection, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The rows a query selects with ``params`` (expanding ``IN`` lists allowed), each a dict
        of column name to value as SQLAlchemy would give it."""
        keys = tuple(params)
        compiled, _ = self._compiled.get((conn.dialect, keys)) or self._prepare(conn.dialect, keys)
        state = compiled.construct_expanded_state(params)  # renders the IN lists
        values, processors = state.parameters, state.processors
        encoded = {k: (processors[k](v) if processors.get(k) else v) for k, v in values.items()}
        driver_params: Any = (tuple(encoded[k] for k in state.positiontup) if compiled.positional else encoded)
        fetched = self._run(conn, state.statement, driver_params, many=False) or []
        columns = self._result_columns(conn.dialect)
        return [{name: (value if p is None else p(value)) for (name, p), value in zip(columns, row)}
                for row in fetched]

    def _result_columns(self, dialect: Any) -> tuple[tuple[str, Any], ...]:
        key = (dialect, ("<result>",))
        if key not in self._compiled:
            self._compiled[key] = tuple(
                (column.key, column.type.dialect_impl(dialect).result_processor(dialect, None))
                for column in self.statement.selected_columns)
        return self._compiled[key]


# --- applications and requests -----------------------------------------------------------

_APPLICATION = select(t.applications).where(t.applications.c.id == bindparam("application_id"))
_APPLICATION_LOCKED = _APPLICATION.with_for_update()
_REQUESTS = (select(t.requests).where(t.requests.c.application_id == bindparam("application_id"))
             .order_by(t.requests.c.step))


def application_row(conn: Connection, application_id: str, *, client_id: str | None = None,
                    lock: bool = False) -> Any:
    if client_id is None:  # the tracker's and the workflow's read: built once
        return conn.execute(_APPLICATION_LOCKED if lock else _APPLICATION, {"application_id": application_id}).first()
    query = select(t.applications).where(t.applications.c.id == application_id)
    if client_id is not None:
        query = query.where(t.applications.c.client_id == client_id)
    if lock:
        query = query.with_for_update()
    return conn.execute(query).first()


def request_rows(conn: Connection, application_id: str) -> list[Any]:
    return list(conn.execute(_REQUESTS, {"application_id": application_id}))


def application_document(app: Any, requests: Iterable[Any], *, order: Iterable[str] = ()) -> dict[str, Any]:
    """The application document of DESIGN §3."""
    rank = {step: i for i, step in enumerate(order)}
    items = sorted(requests, key=lambda r: (rank.get(r.step, len(rank)), r.step))
    overdue = bool(app.due_at is not None and app.status == "in_progress"
                   and (app.due_at if app.due_at.tzinfo else app.due_at.replace(tzinfo=dt.UTC)) < now())
    created_at = iso(app.created_at)
    # A new application's rows share one timestamp object: written out once.
    updated_at = created_at if app.updated_at is app.created_at else iso(app.updated_at)
    return {
        "id": app.id,
        "service": app.service,
        "status": app.status,
        "reference": app.reference,
        "created_at": created_at,
        "updated_at": updated_at,
        "due_at": iso(app.due_at),
        "overdue": overdue,
        "requests": [
            {
                "step": r.step,
                "agency": r.agency,
                "request_id": r.id,
                "status": r.status,
                "agency_reference": r.agency_reference,
                "reason": r.reason,
                "attempts": r.attempts,
                "updated_at": updated_at if r.updated_at is app.updated_at else iso(r.updated_at),
            }
            for r in items
        ],
    }


def list_applications(conn: Connection, client_id: str, *, status: str | None, service: str | None,
                      after: tuple[str, str] | None, limit: int) -> list[Any]:
    """The client's applications, newest first; ``after`` is the (created_at iso, id) cursor."""
    query = select(t.applications).where(t.applications.c.client_id == client_id)
    if status:
        query = query.where(t.applications.c.status == status)
    if service:
        query = query.where(t.applications.c.service == service)
    if after:
        created = dt.datetime.fromisoformat(after[0].replace("Z", "+00:00"))
        if conn.dialect.name == "sqlite":
            created = created.replace(tzinfo=None)
        query = query.where(or_(t.applications.c.created_at < created,
                                and_(t.applications.c.created_at == created, t.applications.c.id < after[1])))
    query = query.order_by(t.applications.c.created_at.desc(), t.applications.c.id.desc()).limit(limit)
    return list(conn.execute(query))


# --- events (the history, hash-chained per application) ----------------------------------

_CHAIN_HEAD = (select(t.events.c.hash).where(t.events.c.application_id == bindparam("application_id"))
               .order_by(t.events.c.id.desc()).limit(1))
_INSERT_EVENT = insert(t.events)
_STORED_EVENT_IDS = select(t.events.c.event_id).where(t.events.c.event_id.in_(bindparam("event_ids", expanding=True)))
# The newest row of each application (its chain head) and the rows of the given event ids.
_HEADS_AND_STORED = (select(t.events.c.id, t.events.c.application_id, t.events.c.event_id, t.events.c.hash)
                     .where(or_(t.events.c.id.in_(select(func.max(t.events.c.id))
                                                  .where(t.events.c.application_id.in_(
                                                      bindparam("application_ids", expanding=True)))
                                                  .group_by(t.events.c.application_id)),
                                t.events.c.event_id.in_(bindparam("event_ids", expanding=True)))))


# The tracker batch's (``defer_events``, ``write_deferred_events``), run on the driver.
_HEADS_AND_STORED_DRIVER = DriverStatement(_HEADS_AND_STORED)
INSERT_EVENTS = DriverStatement(insert(t.events).inline())  # inline(): no RETURNING of the ids

_INSERT_EVENT_ONCE: dict[str, Any] = {}


def _insert_event_once(dialect_name: str) -> Any:
    """``INSERT ... ON CONFLICT (event_id) DO NOTHING``, built once per dialect: a redelivered
    event is recognised by the insert itself instead of a lookup before it."""
    if dialect_name not in _INSERT_EVENT_ONCE:
        dialect = postgresql if dialect_name == "postgresql" else sqlite
        _INSERT_EVENT_ONCE[dialect_name] = dialect.insert(t.events).on_conflict_do_nothing(index_elements=["event_id"])
    return _INSERT_EVENT_ONCE[dialect_name]


def transaction_memo(conn: Connection, name: str) -> dict[Any, Any]:
    """A dict ``name`` kept on ``conn`` for its current transaction only.

    Checked by the transaction's identity: ``conn.info`` stays with the pooled database
    connection across checkouts, and the next transaction (or a retry after a rollback)
    gets an empty one.
    """
    transaction = conn.get_transaction()
    key = f"satupintu.{name}"
    kept = conn.info.get(key)
    if kept is None or kept[0] is not transaction:
        kept = conn.info[key] = (transaction, {})
    return kept[1]


def _chain_heads(conn: Connection) -> dict[str, str]:
    """The newest hash of each application this transaction appended to.

    The caller holds the application's row lock (or SQLite's write lock) until the commit,
    so nobody else appends to these chains meanwhile.
    """
    return transaction_memo(conn, "chain_heads")


def add_event(conn: Connection, *, application_id: str, type: str, event_id: str | None = None,
              request_id: str | None = None, step: str | None = None, status: str | None = None,
              detail: dict[str, Any] | None = None, cause: str | None = None,
              occurred_at: dt.datetime | None = None) -> bool:
    """Append one event to the application's history; False if ``event_id`` was stored before.

    Each row holds the hash of the application's previous row, so editing or deleting a
    row breaks the chain (``satupintu audit verify``).  The caller holds the application
    row lock, which serialises the chain.  In a transaction that called ``defer_events``
    the row is kept and written, with the others in the order they were added, by
    ``write_deferred_events``.
    """
    deferred = _deferred(conn)
    if event_id is None:
        event_id, statement = uuid7_hex(), _INSERT_EVENT
    elif deferred is not None:
        if event_id not in deferred.checked:  # not among the ids looked up in one go
            deferred.checked.add(event_id)
            if conn.execute(_STORED_EVENT_IDS, {"event_ids": [event_id]}).first() is not None:
                deferred.stored.add(event_id)
        if event_id in deferred.stored:
            return False  # that event id is stored (or added in this transaction) already: a redelivery
        statement = _INSERT_EVENT
    else:
        statement = _insert_event_once(conn.dialect.name)
    heads = _chain_heads(conn)
    prev = heads.get(application_id)
    if prev is None:
        prev = conn.execute(_CHAIN_HEAD, {"application_id": application_id}).scalar() or GENESIS
    occurred_at = occurred_at or now()
    row = {
        "event_id": event_id, "application_id": application_id, "request_id": request_id, "step": step,
        "type": type, "status": status, "detail": detail or {}, "cause": cause,
    }
    digest = event_hash(prev, row, occurred_at)
    # Parameters rather than .values(): the statement is then built and cached once.
    row.update(occurred_at=occurred_at, recorded_at=now(), prev_hash=prev, hash=digest)
    if deferred is not None:
        deferred.rows.append(row)
        deferred.stored.add(event_id)
    elif conn.execute(statement, row).rowcount == 0:
        return False  # that event id is stored already: a redelivery
    heads[application_id] = digest
    return True


class _DeferredEvents:
    """A transaction's events still to be written, and what it knows of stored event ids."""

    __slots__ = ("checked", "rows", "stored")

    def __init__(self, checked: set[str], stored: set[str]):
        self.checked, self.stored, self.rows = checked, stored, []


def _deferred(conn: Connection) -> _DeferredEvents | None:
    return transaction_memo(conn, "deferred_events").get("events")


def defer_events(conn: Connection, event_ids: Iterable[str] = (), application_ids: Iterable[str] = ()) -> None:
    """From now until ``write_deferred_events``, keep this transaction's new events in memory.

    One read finds which of ``event_ids`` (the ids the caller is about to add) are stored,
    so that ``add_event`` still answers False for those (any other id is looked up when it
    is added), and the chain head of each of ``application_ids``.  Call it once those
    applications' rows are locked (or SQLite's write lock is held), until the commit: an
    event another transaction stored for them is then visible, and nobody else appends to
    their chains.  The rows are added in order and chained exactly as if written at once;
    nothing may read this transaction's events in between.
    """
    ids, apps = set(event_ids), sorted(set(application_ids))
    stored: set[str] = set()
    if ids or apps:
        heads = _chain_heads(conn)
        newest: dict[str, tuple[int, str]] = {}
        wanted = set(apps)
        for row in _HEADS_AND_STORED_DRIVER.rows(conn, {"application_ids": apps, "event_ids": sorted(ids)}):
            if row["event_id"] in ids:
                stored.add(row["event_id"])
            # An application's head is its newest row; a stored event of it is never newer.
            application_id = row["application_id"]
            if application_id in wanted and row["id"] > newest.get(application_id, (0, ""))[0]:
                newest[application_id] = (row["id"], row["hash"])
        for application_id in apps:
            heads.setdefault(application_id, newest[application_id][1] if application_id in newest else GENESIS)
    transaction_memo(conn, "deferred_events")["events"] = _DeferredEvents(ids, stored)


def write_deferred_events(conn: Connection) -> int:
    """Write the events kept since ``defer_events``, in one statement; returns how many."""
    memo = transaction_memo(conn, "deferred_events")
    deferred = memo.pop("events", None)
    if deferred is None or not deferred.rows:
        return 0
    INSERT_EVENTS.executemany(conn, deferred.rows)
    return len(deferred.rows)


def event_hash(prev: str, row: dict[str, Any], occurred_at: dt.datetime) -> str:
    fields = {"event_id": row["event_id"], "application_id": row["application_id"], "request_id": row["request_id"],
              "step": row["step"], "type": row["type"], "status": row["status"], "detail": row["detail"],
              "cause": row["cause"], "occurred_at": iso(occurred_at)}
    return hashlib.sha256((prev + _canonical(fields)).encode()).hexdigest()


def history(conn: Connection, application_id: str, *, after_id: int = 0) -> list[dict[str, Any]]:
    rows = conn.execute(select(t.events).where(t.events.c.application_id == application_id,
                                               t.events.c.id > after_id).order_by(t.events.c.id))
    return [event_document(r) for r in rows]


def event_document(r: Any) -> dict[str, Any]:
    return {
        "id": r.id, "type": r.type, "step": r.step, "request_id": r.request_id, "status": r.status,
        "cause": r.cause, "detail": r.detail, "occurred_at": iso(r.occurred_at), "recorded_at": iso(r.recorded_at),
    }


# --- outbox ------------------------------------------------------------------------------

_INSERT_OUTBOX = insert(t.outbox)

# Prebuilt updates the tracker and the workflow share (a bindparam may not share a name with
# a column the statement sets).  ``UPDATE_REQUEST`` sets the columns its parameters name.
UPDATE_REQUEST = update(t.requests).where(t.requests.c.id == bindparam("request_row_id"))
SET_APPLICATION_STATUS = (update(t.applications).where(t.applications.c.id == bindparam("app_id"))
                          .values(status=bindparam("new_status"), updated_at=bindparam("moment")))
# The same, for the tracker's batch (``tracker_batch.EventBatch.finish``): on the driver.
UPDATE_REQUESTS = DriverStatement(UPDATE_REQUEST)
SET_APPLICATIONS_STATUS = DriverStatement(SET_APPLICATION_STATUS)


def enqueue(conn: Connection, *, exchange: str, routing_key: str, body: dict[str, Any],
            headers: dict[str, Any]) -> None:
    conn.execute(_INSERT_OUTBOX, {"exchange": exchange, "routing_key": routing_key, "body": body,
                                  "headers": headers, "created_at": now()})
    notify_outbox(conn)


def notify_outbox(conn: Connection) -> None:
    """On PostgreSQL, wake the relay when this transaction commits: one NOTIFY per transaction
    (PostgreSQL folds several into one anyway)."""
    if conn.dialect.name == "postgresql":
        memo = transaction_memo(conn, "outbox_notify")
        if not memo.get("sent"):
            conn.exec_driver_sql(f"NOTIFY {OUTBOX_CHANNEL}")
            memo["sent"] = True


# The relay's statements, built once: a statement built per call costs SQLAlchemy a cache
# key each time (~8 % of the relay's CPU in ``bench fast``, py-spy); ``ids`` expand.
_OUTBOX_IDS = bindparam("ids", expanding=True)
_CLAIMABLE_OUTBOX = (select(t.outbox.c.id, t.outbox.c.claimed_until)
                     .where(t.outbox.c.sent_at.is_(None),
                            or_(t.outbox.c.claimed_until.is_(None), t.outbox.c.claimed_until < bindparam("moment")))
                     .order_by(t.outbox.c.id).limit(bindparam("limit")).with_for_update(skip_locked=True))
_CLAIM_OUTBOX = update(t.outbox).where(t.outbox.c.id.in_(_OUTBOX_IDS)).values(claimed_until=bindparam("until"))
_CLAIMED_OUTBOX = select(t.outbox).where(t.outbox.c.id.in_(_OUTBOX_IDS)).order_by(t.outbox.c.id)
_MARK_SENT = update(t.outbox).where(t.outbox.c.id.in_(_OUTBOX_IDS)).values(sent_at=bindparam("sent_at"))


def claim_outbox(conn: Connection, *, limit: int, lease: dt.timedelta,
                 reclaimed: set[int] | None = None) -> list[Any]:
    """Claim up to ``limit`` unsent rows for ``lease``; rows of a crashed relay come back.

    On PostgreSQL ``FOR UPDATE SKIP LOCKED`` keeps concurrent relays off each other's rows.
    The ids of rows claimed before (so perhaps published already) are added to ``reclaimed``.
    """
    moment = now()
    claimable = conn.execute(_CLAIMABLE_OUTBOX, {"moment": moment, "limit": limit}).all()
    ids = [row.id for row in claimable]
    if not ids:
        return []
    if reclaimed is not None:
        reclaimed.update(row.id for row in claimable if row.claimed_until is not None)
    conn.execute(_CLAIM_OUTBOX, {"ids": ids, "until": moment + lease})
    return conn.execute(_CLAIMED_OUTBOX, {"ids": ids}).all()


def mark_sent(conn: Connection, ids: list[int]) -> None:
    if ids:
        conn.execute(_MARK_SENT, {"ids": ids, "sent_at": now()})


def oldest_unsent_age(conn: Connection) -> float:
    oldest = conn.execute(select(func.min(t.outbox.c.created_at)).where(t.outbox.c.sent_at.is_(None))).scalar()
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.UTC)
    return max(0.0, (now() - oldest).total_seconds())
