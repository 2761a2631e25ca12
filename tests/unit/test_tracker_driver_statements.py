"""The tracker batch's statements run on the driver (``records.DriverStatement``) and its
consumer's store connection and acks: what they read and write must be exactly what
SQLAlchemy's own execution gives, and a store error must leave the tracker on a fresh
connection.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from support import RecordingChannel

from gateway import tracker as tracker_module
from gateway.store import records
from gateway.store import tables as t
from gateway.tracker import Tracker
from gateway.tracker_batch import _LOCK_APPLICATIONS, _LOCK_APPLICATIONS_DRIVER

MOMENT = dt.datetime(2026, 11, 28, 7, 30, 15, 123456, tzinfo=dt.UTC)


def _seed(engine, count: int = 3) -> list[str]:
    ids = [f"app_driver_{i}" for i in range(count)]
    with engine.begin() as conn:
        conn.execute(insert(t.clients).values(id="cl_driver", name="driver", key_hash="k" * 64, scopes="all",
                                              created_at=MOMENT))
        for i, app_id in enumerate(ids):
            conn.execute(insert(t.applications).values(
                id=app_id, client_id="cl_driver", service="svc", service_version="1", status="in_progress",
                reference=None if i else "REF-0", data={"nested": {"n": i}, "text": "ä"}, request_hash="h" * 64,
                cancel_requested=bool(i % 2), created_at=MOMENT, updated_at=MOMENT + dt.timedelta(seconds=i),
                due_at=None if i else MOMENT))
            conn.execute(insert(t.requests).values(
                id=f"req_driver_{i}", application_id=app_id, step="company", agency="registry", operation="register",
                status="queued", attempts=0, output=None, updated_at=MOMENT))
    return ids


def test_rows_read_on_the_driver_equal_what_sqlalchemy_reads(engine):
    ids = _seed(engine)
    with engine.begin() as conn:
        expected = [dict(r._mapping) for r in conn.execute(_LOCK_APPLICATIONS, {"application_ids": ids})]
        got = _LOCK_APPLICATIONS_DRIVER.rows(conn, {"application_ids": ids})
    assert got == expected
    assert got[0]["data"] == {"nested": {"n": 0}, "text": "ä"} and isinstance(got[1]["cancel_requested"], bool)
    assert isinstance(got[0]["created_at"], dt.datetime) and got[0]["due_at"] is not None


def test_updates_on_the_driver_store_what_sqlalchemy_would(engine):
    _seed(engine)
    later = MOMENT + dt.timedelta(minutes=5)
    values = {"status": "approved", "attempts": 2, "updated_at": later, "agency_reference": "CR-9", "reason": None}
    with engine.begin() as conn:
        records.UPDATE_REQUESTS.executemany(conn, [dict(values, output={"n": 1}, request_row_id="req_driver_0")])
        conn.execute(records.UPDATE_REQUEST, dict(values, output={"n": 1}, request_row_id="req_driver_1"))
        records.SET_APPLICATIONS_STATUS.executemany(conn, [
            {"app_id": "app_driver_0", "new_status": "completed", "moment": later},
            {"app_id": "app_driver_2", "new_status": "failed", "moment": later}])
    with engine.connect() as conn:
        by_driver, by_sqlalchemy = (dict(conn.execute(select(t.requests).where(t.requests.c.id == i)).one()._mapping)
                                    for i in ("req_driver_0", "req_driver_1"))
        apps = {r.id: (r.status, r.updated_at) for r in conn.execute(select(t.applications))}
    own = ("id", "application_id")
    assert {k: v for k, v in by_driver.items() if k not in own} == {k: v for k, v in by_sqlalchemy.items() if k not in own}
    assert by_driver["output"] == {"n": 1} and by_driver["status"] == "approved"
    assert by_driver["updated_at"].replace(tzinfo=dt.UTC) == later
    assert apps["app_driver_0"][0] == "completed" and apps["app_driver_2"][0] == "failed"
    assert apps["app_driver_1"][0] == "in_progress"  # not in the executemany


def test_a_driver_error_comes_back_as_sqlalchemys(engine):
    """The tracker retries on ``OperationalError`` and lets others through: the class matters."""
    _seed(engine)
    row = {"event_id": "ev-dup", "application_id": "app_driver_0", "request_id": None, "step": None,
           "type": "status", "status": None, "detail": {}, "cause": None, "occurred_at": MOMENT,
           "recorded_at": MOMENT, "prev_hash": records.GENESIS, "hash": "a" * 64}
    with engine.begin() as conn:
        records.INSERT_EVENTS.executemany(conn, [row])
    with pytest.raises(IntegrityError), engine.begin() as conn:
        records.INSERT_EVENTS.executemany(conn, [dict(row, hash="b" * 64)])


def test_a_statement_with_a_bind_nobody_gives_is_refused(engine):
    """A column default SQLAlchemy would fill in is not filled in on the driver: refuse, loudly."""
    statement = records.DriverStatement(insert(t.webhooks).inline())
    with pytest.raises(ValueError, match="attempts"):
        statement._prepare(engine.dialect, ("client_id", "application_id", "url", "body", "next_attempt_at",
                                            "created_at"))


class _Impl:
    def __init__(self) -> None:
        self.acks: list[tuple[int, bool]] = []

    def basic_ack(self, delivery_tag: int = 0, multiple: bool = False) -> None:
        self.acks.append((delivery_tag, multiple))


def test_the_ack_goes_to_pikas_channel_proper_without_a_flush():
    blocking = SimpleNamespace(_impl=_Impl(), basic_ack=lambda *a, **k: pytest.fail("flushing ack used"))
    tracker_module._ack(blocking, 7)
    assert blocking._impl.acks == [(7, True)]


def test_the_ack_falls_back_to_basic_ack_on_another_channel():
    plain = _Impl()
    tracker_module._ack(plain, 3)
    assert plain.acks == [(3, True)]



def _work(calls: list[Any], fail_first: bool):
    def work(conn) -> None:
        calls.append(conn)
        if fail_first and len(calls) == 1:
            raise OperationalError("UPDATE", {}, Exception("database is locked"))
    return work


def test_the_tracker_keeps_its_store_connection_between_batches_and_drops_it_after_a_store_error(engine, catalog):
    tracker = Tracker(engine, catalog, amqp_urls=(), namespace="unit")
    channel, calls = RecordingChannel(), []
    tracker._batch.append((1, "app-x", None, _work(calls, False), {}))
    tracker._flush(channel)
    tracker._batch.append((2, "app-x", None, _work(calls, False), {}))
    tracker._flush(channel)
    assert calls[0] is calls[1]  # the same Connection: no checkout per batch
    kept = tracker._conn
    tracker._batch.append((3, "app-x", None, _work(calls := [], True), {}))
    tracker._flush(channel)
    assert len(calls) == 2 and calls[0] is kept and calls[1] is not kept  # retried on a fresh one
    assert kept.closed and tracker._conn is calls[1]
    assert channel.acks == [1, 2, 3] and channel.nacks == []
    tracker._drop_store(invalidate=False)
    assert tracker._conn is None and calls[1].closed
