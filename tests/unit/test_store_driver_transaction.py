"""``engine.driver_transaction``: a write transaction on the driver's connection that keeps
what ``engine.begin()`` guarantees -- SQLite's writer lock held exactly inside it and let go
whatever happens, rollback on error, commits counted for the checkpoints, the connection
back in the pool."""


import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from support import impatient_sqlite_engine, sqlite_write_lock_held, writer_lock_free_elsewhere

from gateway.store import engine as store_engine
from gateway.store.engine import _WRITERS, driver_transaction, make_engine


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE probe (n INTEGER PRIMARY KEY)"))
    yield engine
    engine.dispose()


def lock_is_free(engine) -> bool:
    """Whether another thread could take the engine's writer lock right now."""
    return writer_lock_free_elsewhere(_WRITERS[engine])


def stored(engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT n FROM probe ORDER BY n")).scalars())


def test_the_writer_lock_is_held_inside_the_transaction_only(engine):
    assert lock_is_free(engine)
    with driver_transaction(engine) as connection:
        assert not lock_is_free(engine)
        assert connection.driver_connection.in_transaction
        connection.cursor().execute("INSERT INTO probe VALUES (1)")
    assert lock_is_free(engine)
    assert stored(engine) == [1]
    assert engine.pool.checkedout() == 0


def test_an_error_inside_rolls_back_and_lets_the_next_writer_in(engine):
    with pytest.raises(RuntimeError), driver_transaction(engine) as connection:
        connection.cursor().execute("INSERT INTO probe VALUES (1)")
        raise RuntimeError("refused")
    assert lock_is_free(engine)
    assert stored(engine) == []
    assert engine.pool.checkedout() == 0
    with driver_transaction(engine) as connection:  # the pooled connection is usable again
        assert connection.driver_connection.in_transaction
        connection.cursor().execute("INSERT INTO probe VALUES (2)")
    assert stored(engine) == [2]


def test_a_begin_that_fails_is_sqlalchemys_error_and_lets_go_of_the_lock(tmp_path):
    database = tmp_path / "busy.db"
    engine = impatient_sqlite_engine(database)
    with sqlite_write_lock_held(database), pytest.raises(OperationalError), driver_transaction(engine):
        pytest.fail("the transaction began while another held SQLite's lock")
    assert lock_is_free(engine)
    assert engine.pool.checkedout() == 0
    engine.dispose()


def test_commits_ask_for_checkpoints_and_rollbacks_do_not(engine, monkeypatch):
    requested = []
    monkeypatch.setattr(store_engine, "CHECKPOINT_EVERY", 1)
    monkeypatch.setattr(store_engine._CHECKPOINTS, "request", requested.append)
    with pytest.raises(RuntimeError), driver_transaction(engine):
        raise RuntimeError("rolled back")
    assert requested == []
    with driver_transaction(engine) as connection:
        connection.cursor().execute("INSERT INTO probe VALUES (1)")
    assert requested == [_WRITERS[engine]]
