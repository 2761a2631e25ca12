"""The worker's per-call guards without locks on the free path: one call at a time per request
id (``Worker._claim``/``_release``) and an agency's call slots (``AgencyLimits``)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from broker.limits import AgencyLimits
from broker.worker import Worker


def _worker() -> Worker:
    return Worker(SimpleNamespace(agencies={}), amqp_urls=(), namespace="test-claims")


def test_a_second_copy_of_a_request_waits_for_the_first_and_is_told_it_waited():
    worker = _worker()
    assert worker._claim("req-1", "first") is True
    claimed, result = threading.Event(), []

    def second() -> None:
        result.append(worker._claim("req-1", "second"))
        claimed.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not claimed.wait(0.3)  # held by the first copy
    assert worker._claim("req-2", "other") is True  # another request id does not wait
    worker._release("req-2")
    worker._release("req-1")
    assert claimed.wait(5)
    thread.join(5)
    assert result == [False]
    assert worker._busy == {"req-1": "second"}
    worker._release("req-1")
    assert worker._busy == {} and worker._busy_waiting == 0


def test_copies_of_one_request_never_run_together():
    worker = _worker()
    inside, overlaps, waited = [0], [], []
    start = threading.Barrier(8)

    def calls(n: int) -> None:
        start.wait()
        for i in range(200):
            owner = (n, i)
            waited.append(not worker._claim("req-1", owner))
            inside[0] += 1
            if inside[0] != 1:
                overlaps.append(inside[0])
            inside[0] -= 1
            worker._release("req-1")

    threads = [threading.Thread(target=calls, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert overlaps == []
    assert len(waited) == 1600
    assert worker._busy == {} and worker._busy_waiting == 0


def _limits(concurrency: int) -> AgencyLimits:
    return AgencyLimits(SimpleNamespace(id="a", concurrency=concurrency, rate_per_second=None, file="a.yaml",
                                        maintenance=()))


def test_an_agencys_slots_bound_its_calls_and_a_freed_slot_starts_a_waiting_one():
    limits = _limits(2)
    limits.take_slot()
    with limits.slot():
        third = threading.Event()

        def waiting() -> None:
            with limits.slot():
                third.set()

        thread = threading.Thread(target=waiting)
        thread.start()
        assert not third.wait(0.3)  # both slots are held
    assert third.wait(5)  # the slot given back by ``slot()`` went to it
    thread.join(5)
    limits.free_slot()
    for _ in range(2):  # both slots are free again, and no more than both
        limits.take_slot()
    assert limits._slots.empty()
