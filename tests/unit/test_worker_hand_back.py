"""Outcomes handed back from call threads to a worker session's ioloop (broker/worker.py)."""

from __future__ import annotations

import threading

from pika.adapters.select_connection import IOLoop

from broker.worker import _Session


def _session(ioloop: IOLoop) -> _Session:
    session = _Session.__new__(_Session)  # no broker connection: only the hand-back machinery
    session.ioloop = ioloop
    session._over = False
    session._handed_back = []
    session._lock = threading.Lock()
    session.window = None
    return session


def test_every_outcome_handed_back_runs_once_on_the_ioloop_thread():
    ioloop = IOLoop()
    session = _session(ioloop)
    ran: list[tuple[int, int, str]] = []
    threads, per_thread = 8, 200
    done = threading.Event()

    def outcome(t: int, i: int) -> None:
        ran.append((t, i, threading.current_thread().name))
        if len(ran) == threads * per_thread:
            done.set()
            ioloop.stop()

    def caller(t: int) -> None:
        for i in range(per_thread):
            assert session.hand_back(lambda t=t, i=i: outcome(t, i))

    callers = [threading.Thread(target=caller, args=(t,)) for t in range(threads)]
    for c in callers:
        c.start()
    ioloop.call_later(30, ioloop.stop)  # a safety net, not a timing
    ioloop.start()
    for c in callers:
        c.join()
    ioloop.close()
    assert done.is_set()
    assert sorted((t, i) for t, i, _ in ran) == [(t, i) for t in range(threads) for i in range(per_thread)]
    assert {name for _, _, name in ran} == {threading.current_thread().name}
    for t in range(threads):  # each thread's outcomes in the order it handed them back
        mine = [i for tt, i, _ in ran if tt == t]
        assert mine == sorted(mine)


def test_an_ended_session_takes_no_outcome():
    ioloop = IOLoop()
    session = _session(ioloop)
    session._ended()
    assert session.hand_back(lambda: None) is False
    assert session._handed_back == []
    ioloop.close()
