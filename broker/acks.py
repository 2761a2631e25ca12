"""Two pieces of a worker session's bookkeeping on its ioloop: acks and ``sent`` announcements.

``AckLedger`` acks a consumer channel's deliveries, several in one frame where that is
safe; ``SentAnnouncements`` runs the ``sent`` events of calls still running after a
while (decision 15) behind one timer.  Both are used only on the session's ioloop thread.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol


class CallState(Protocol):
    finished: bool


class AckLedger:
    """The delivery tags of one consumer channel that are neither acked nor refused yet.

    ``basic_ack(tag, multiple=True)`` acks *every* unacked delivery up to ``tag`` on the
    channel, so it may only name a tag when every earlier tag still open is ready to be
    acked as well.  Deliveries become ready when the broker confirmed everything
    published for them; ``flush()`` (after a batch of confirms) acks the ready run at the
    front of the open tags in one frame and any other ready tag on its own, at once (a
    delivery whose call is slow never holds back its neighbours' acks, which would hold
    prefetch slots).  A tag left open (abandoned, or its call still running) stops the run:
    it is never covered by a neighbour's ack.  Refusals (nack, reject) go out at once.
    """

    __slots__ = ("channel", "open", "due", "batching")

    def __init__(self, channel):
        self.channel = channel
        self.open: dict[int, bool] = {}  # tag -> ready to ack; tags arrive in increasing order
        self.due = 0  # tags marked ready and not yet acked
        self.batching = False  # inside a batch of confirms: ``flush()`` follows

    def received(self, tag: int) -> None:
        self.open[tag] = False

    def ready(self, tag: int) -> None:
        if tag in self.open:
            self.open[tag] = True
            self.due += 1
            if not self.batching:
                self.flush()

    def refuse(self, tag: int, *, requeue: bool) -> None:
        """``basic_nack`` (requeue) or ``basic_reject`` (dead-letter) one delivery, now."""
        self.open.pop(tag, None)
        if not self.channel.is_open:
            return  # the broker redelivers it anyway
        if requeue:
            self.channel.basic_nack(tag, requeue=True)
        else:
            self.channel.basic_reject(tag, requeue=False)

    def flush(self) -> None:
        if not self.due:
            return
        self.due = 0
        if not self.channel.is_open:
            self.open = {tag: False for tag in self.open}  # redelivered by the broker
            return
        run_end, run = 0, 0
        for tag, ready in self.open.items():
            if not ready:
                break
            run_end, run = tag, run + 1
        for _ in range(run):
            self.open.pop(next(iter(self.open)))
        if run:
            self.channel.basic_ack(run_end, multiple=run > 1)
        rest = [tag for tag, ready in self.open.items() if ready]
        for tag in rest:
            del self.open[tag]
            self.channel.basic_ack(tag)


class SentAnnouncements:
    """A session's pending ``sent`` events, in the order their calls started, behind one timer.

    Every call is due for its announcement ``after`` seconds after it started, so the
    calls' deadlines come in the order the calls do: one ioloop timer, armed for the
    oldest call still running, replaces a ``call_later`` (and a ``remove_timeout``) per
    call.  Calls that finished are dropped when the timer next fires.
    """

    __slots__ = ("ioloop", "after", "queue", "timer")

    def __init__(self, ioloop, after: float):
        self.ioloop = ioloop
        self.after = after
        self.queue: deque[tuple[float, CallState, Callable[[], None]]] = deque()
        self.timer: Any = None

    def add(self, call_state: CallState, announce: Callable[[], None]) -> None:
        self.queue.append((time.monotonic() + self.after, call_state, announce))
        if self.timer is None:
            self.timer = self.ioloop.call_later(self.after, self._fire)

    def _fire(self) -> None:
        self.timer = None
        queue = self.queue
        now = time.monotonic()
        while queue and (queue[0][1].finished or queue[0][0] <= now):
            _due, call_state, announce = queue.popleft()
            if not call_state.finished:
                announce()
        if queue:
            self.timer = self.ioloop.call_later(max(queue[0][0] - now, 0.0), self._fire)
