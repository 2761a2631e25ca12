"""The SQLite writer queue (``gateway/store/sqlite.py``): one writer at a time, across threads
and processes alike, re-entrant per thread, and never left locked by a thread that ended."""

import gc
import threading

from support import impatient_sqlite_engine, sqlite_write_lock_held, writer_lock_free_elsewhere

from gateway.store.sqlite import WriterQueue


def test_a_writer_keeps_other_threads_out_until_its_outermost_release(tmp_path):
    queue = WriterQueue(str(tmp_path / "s.db"))
    queue.acquire()
    queue.acquire()  # a nested write of the same thread does not wait for itself
    assert not writer_lock_free_elsewhere(queue)
    queue.release()
    assert not writer_lock_free_elsewhere(queue)
    queue.release()
    assert writer_lock_free_elsewhere(queue)


def test_a_thread_that_ends_holding_the_lock_lets_the_next_writer_in(tmp_path):
    queue = WriterQueue(str(tmp_path / "s.db"))
    thread = threading.Thread(target=queue.acquire)
    thread.start()
    thread.join(5)
    del thread
    gc.collect()
    assert writer_lock_free_elsewhere(queue)


def test_writers_take_turns(tmp_path):
    queue = WriterQueue(str(tmp_path / "s.db"))
    inside, most = [0], [0]
    guard = threading.Lock()

    def write() -> None:
        for _ in range(200):
            queue.acquire()
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            with guard:
                inside[0] -= 1
            queue.release()

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert most[0] == 1


def test_a_write_that_cannot_begin_lets_the_next_writer_in(tmp_path):
    import pytest
    from sqlalchemy.exc import OperationalError

    database = tmp_path / "store.db"
    engine = impatient_sqlite_engine(database)
    with sqlite_write_lock_held(database), pytest.raises(OperationalError), engine.begin():
        pass  # the tracker retries on this very error
    done = threading.Event()

    def write() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO probe VALUES (1)")
        done.set()

    threading.Thread(target=write, daemon=True).start()
    assert done.wait(10), "the failed BEGIN kept the writer lock"
    engine.dispose()
