"""The worker's call pool: every call runs, threads never exceed the size, shutdown drops the unstarted."""

import threading

import pytest

from broker.callpool import CallPool


def test_every_call_runs_on_at_most_size_threads():
    pool = CallPool(4, name="t")
    done, names, lock = [], set(), threading.Lock()
    finished = threading.Event()

    def call(i):
        with lock:
            done.append(i)
            names.add(threading.current_thread().name)
            if len(done) == 200:
                finished.set()

    for i in range(200):
        pool.submit(lambda i=i: call(i))
    assert finished.wait(10)
    assert sorted(done) == list(range(200))
    assert 1 <= pool.threads <= 4
    assert names <= {f"t-{n}" for n in range(4)}
    assert pool.shutdown(wait=True) == 0


def test_a_thread_starts_only_when_every_thread_is_busy():
    pool = CallPool(8)
    for _ in range(20):
        ran = threading.Event()
        pool.submit(ran.set)
        assert ran.wait(5)
    # One call at a time, each finished before the next: one thread served them all
    # (a second may start if the counter is read a moment before the first call's end).
    assert pool.threads <= 2
    pool.shutdown()


def test_busy_threads_make_the_pool_grow_to_its_size_and_no_further():
    pool = CallPool(3)
    release = threading.Event()
    started = threading.Semaphore(0)

    def blocked():
        started.release()
        release.wait(10)

    for _ in range(5):
        pool.submit(blocked)
    for _ in range(3):
        assert started.acquire(timeout=5)
    assert pool.threads == 3
    assert not started.acquire(timeout=0.2)  # two calls wait for a free thread
    release.set()
    for _ in range(2):
        assert started.acquire(timeout=5)
    pool.shutdown()


def test_a_raising_call_is_logged_and_the_thread_lives_on(caplog):
    pool = CallPool(1)
    pool.submit(lambda: 1 / 0)
    ran = threading.Event()
    pool.submit(ran.set)
    assert ran.wait(5)
    assert pool.threads == 1
    assert "an agency call raised" in caplog.text
    pool.shutdown()


def test_shutdown_drops_calls_not_started_and_waits_for_running_ones():
    pool = CallPool(1)
    release, running, finished = threading.Event(), threading.Event(), threading.Event()
    later = []

    def first():
        running.set()
        release.wait(10)
        finished.set()

    pool.submit(first)
    assert running.wait(5)
    for i in range(3):
        pool.submit(lambda i=i: later.append(i))
    threading.Timer(0.2, release.set).start()
    assert pool.shutdown(wait=True) == 3
    assert finished.is_set()
    assert later == []
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_a_pool_needs_a_thread():
    with pytest.raises(ValueError):
        CallPool(0)
