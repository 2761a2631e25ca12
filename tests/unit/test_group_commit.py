"""Group commit (``gateway/store/sqlite.py``): writes that arrive while a transaction
runs share the next one; each write gets exactly its own outcome, whatever its company."""

import threading
import time

import pytest
from sqlalchemy import JSON, Column, MetaData, String, Table, event, select
from sqlalchemy.exc import IntegrityError

from gateway.store import sqlite
from gateway.store.engine import make_engine
from gateway.store.sqlite import GroupCommit, Writes

metadata = MetaData()
things = Table("things", metadata, Column("id", String, primary_key=True), Column("value", JSON))
notes = Table("notes", metadata, Column("id", String, primary_key=True), Column("about", String))


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'group.db'}")
    metadata.create_all(engine)
    engine.commits = 0  # write transactions committed since the tables were made

    @event.listens_for(engine, "commit")
    def count(_conn):
        engine.commits += 1
    yield engine
    engine.dispose()


def writes(engine, thing_id, *, then=None):
    return Writes([(things, [{"id": thing_id, "value": {"n": thing_id}}]),
                   (notes, [{"id": f"note-{thing_id}", "about": thing_id}])], then=then)


def commits(engine):
    return engine.commits


def stored(engine, table=things):
    with engine.connect() as conn:
        return sorted(conn.execute(select(table.c.id)).scalars())


class Blocker:
    """A ``then`` that holds the first transaction open until ``queued`` writes wait behind it."""

    def __init__(self, group: GroupCommit, queued: int):
        self.group, self.queued = group, queued

    def __call__(self, _conn) -> None:
        deadline = time.monotonic() + 10
        while len(self.group._waiting) < self.queued and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(self.group._waiting) >= self.queued


def run_in_threads(group, items):
    """``group.write(w)`` for each item in a thread of its own; returns {name: exception or None}."""
    outcomes = {}

    def one(name, item):
        try:
            group.write(item)
            outcomes[name] = None
        except Exception as exc:  # noqa: BLE001 -- the test looks at it
            outcomes[name] = exc

    threads = [threading.Thread(target=one, args=(name, item)) for name, item in items]
    for thread in threads:
        thread.start()
        time.sleep(0.02)  # in this order
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


def test_writes_that_wait_behind_a_transaction_share_the_next_one(engine):
    group = GroupCommit(engine)
    first = writes(engine, "a", then=Blocker(group, queued=3))
    outcomes = run_in_threads(group, [("a", first)] + [(n, writes(engine, n)) for n in "bcd"])
    assert outcomes == {"a": None, "b": None, "c": None, "d": None}
    assert stored(engine) == ["a", "b", "c", "d"]
    assert stored(engine, notes) == ["note-a", "note-b", "note-c", "note-d"]
    assert commits(engine) == 2  # a alone, then b, c and d together


def test_a_write_alone_is_written_at_once_and_its_error_raised_once(engine):
    group = GroupCommit(engine)
    group.write(writes(engine, "a"))
    assert commits(engine) == 1
    attempts = []
    with pytest.raises(IntegrityError):
        group.write(writes(engine, "a", then=attempts.append))
    assert attempts == []  # the insert failed before ``then``
    assert stored(engine) == ["a"]
    group.write(writes(engine, "b"))  # the group is not left waiting for a leader
    assert stored(engine) == ["a", "b"]


def test_a_failing_write_does_not_sink_its_group(engine):
    group = GroupCommit(engine)
    group.write(writes(engine, "used"))
    first = writes(engine, "a", then=Blocker(group, queued=3))
    items = [("a", first), ("b", writes(engine, "b")), ("dup", writes(engine, "used")), ("d", writes(engine, "d"))]
    outcomes = run_in_threads(group, items)
    assert isinstance(outcomes.pop("dup"), IntegrityError)
    assert outcomes == {"a": None, "b": None, "d": None}
    assert stored(engine) == ["a", "b", "d", "used"]


def test_then_runs_inside_the_transaction_of_its_write(engine):
    group = GroupCommit(engine)
    seen = []

    def then(conn):
        seen.append(sorted(conn.execute(select(things.c.id)).scalars()))
        raise RuntimeError("refused after the inserts")

    with pytest.raises(RuntimeError):
        group.write(writes(engine, "a", then=then))
    assert seen == [["a"]]
    assert stored(engine) == []  # rolled back with it


def test_groups_are_capped(engine):
    group = GroupCommit(engine, max_group=2)
    first = writes(engine, "a", then=Blocker(group, queued=4))
    outcomes = run_in_threads(group, [("a", first)] + [(n, writes(engine, n)) for n in "bcde"])
    assert set(outcomes.values()) == {None}
    assert stored(engine) == ["a", "b", "c", "d", "e"]
    assert commits(engine) == 3  # a; b and c; d and e


def test_one_group_per_engine_which_it_does_not_keep_alive(tmp_path):
    import gc

    engine = make_engine(f"sqlite:///{tmp_path / 'alive.db'}")
    assert sqlite.group_commit(engine) is sqlite.group_commit(engine)
    engine.dispose()
    del engine
    gc.collect()
    assert not any(str(tmp_path) in str(e.url) for e in list(sqlite._GROUPS))


def test_a_forked_child_starts_afresh(engine):
    import os
    group = GroupCommit(engine)
    group._leading = True  # as if a thread of the parent were writing at the moment of the fork
    group._waiting.append(object())
    pid = os.fork()
    if pid == 0:  # the child: nobody leads here, and a write goes through
        try:
            ok = group._leading is False and group._waiting == []
            group.write(writes(engine, "child"))
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert stored(engine) == ["child"]
