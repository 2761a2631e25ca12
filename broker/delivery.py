"""A consumed message's life until its ack: acked only once the broker confirmed everything
published for it.

``AckLedger`` acks a consumer channel's deliveries, several in one frame where that is
safe; ``Delivery`` is one consumed message and what was published for it; ``settle``
applies a batch of publisher confirms to them.  All used only on the session's ioloop
thread (the real ``broker.session.WorkerSession`` or ``broker.stub.StubSession``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from core import metrics

log = logging.getLogger("satupintu.worker")


class Publishing(Protocol):
    """What a delivery needs of its session."""

    closing: bool

    def publish(self, exchange: str, routing_key: str, body: dict[str, Any], headers: dict[str, Any] | None,
                *, token: Any) -> None: ...

    def call_later(self, delay: float, callback: Any) -> Any: ...


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


# An outcome the broker would not confirm means trouble at the broker (a queue without a
# leader while a node is lost, a full disk), not in the message, and the outcome is known:
# the worker publishes it again, the delivery still unacked, until the broker confirms it.
# Handing the message back instead (``basic_nack(requeue=True)``) called the agency again
# and spent one of the quorum queue's five returns each time: over a node's loss a message
# burned them within a second and was dead-lettered, its bundle failed
# (tests/scale/test_rabbitmq_cluster.py); pauses before the requeue only moved the limit.
# A message confirmed before the others of its round is published again with them: its
# copies are harmless (events carry ids the tracker keeps once; a retry is a request the
# agency files once under its id).  The held deliveries fill the prefetch, so the worker
# takes no new work while the broker is in trouble; a connection lost meanwhile returns them.
REPUBLISH_DELAY_FIRST = 0.5
REPUBLISH_DELAY_MAX = 30.0
REPUBLISH_DELAY_FIRST = 0.5
REPUBLISH_DELAY_MAX = 30.0


def republish_delay(rounds: int) -> float:
    """Seconds to wait before publishing a delivery's messages again, after ``rounds`` earlier tries."""
    return min(REPUBLISH_DELAY_MAX, REPUBLISH_DELAY_FIRST * 2 ** min(rounds, 16))


class Delivery:
    """One consumed message: acked once every message published for it is confirmed.

    The worker publishes what a call led to (an outcome, or a retry and its event, ...)
    with ``publish()``, then ``seal()``s the delivery; the confirms arrive later on the
    same ioloop (``confirmed()``).  All confirmed: acked through its channel's
    ``AckLedger``, perhaps together with its neighbours.  Any refused (a nack, or returned
    for want of a queue): all of them are published again after a pause
    (``republish_delay``), the delivery still unacked, until the broker confirms them.
    """

    def __init__(self, session: Publishing, acks: AckLedger, tag: int, request_id: str | None):
        self.session = session
        self.acks = acks
        self.tag = tag
        self.request_id = request_id
        self.published: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = []
        self.rounds = 0  # times its messages went unconfirmed and were published again
        self.outstanding = 0
        self.failed = False
        self.sealed = False
        self.settled = False

    def publish(self, exchange: str, routing_key: str, body: dict[str, Any],
                headers: dict[str, Any] | None = None) -> None:
        self.published.append((exchange, routing_key, body, headers))
        self.outstanding += 1
        self.session.publish(exchange, routing_key, body, headers, token=self)

    def seal(self) -> None:
        """Nothing more will be published for this delivery."""
        self.sealed = True
        self._maybe_settle()

    def abandon(self) -> None:
        """Leave it unacked: the broker redelivers it when the channel or connection goes."""
        self.settled = True

    def confirmed(self, ok: bool) -> None:
        self.outstanding -= 1
        if not ok:
            self.failed = True
        self._maybe_settle()

    def _maybe_settle(self) -> None:
        if self.settled or not self.sealed or self.outstanding > 0:
            return
        if self.failed:
            delay = republish_delay(self.rounds)
            self.rounds += 1
            log.error("the broker did not confirm what was published for %s; publishing it again in %g s",
                      self.request_id, delay)
            metrics.REPUBLISHED.inc()
            self.session.call_later(delay, self._publish_again)
            return
        self.settled = True
        self.acks.ready(self.tag)

    def _publish_again(self) -> None:
        if self.settled or self.session.closing or not self.acks.channel.is_open:
            return  # the broker hands the message out again itself
        self.failed = False
        published, self.published = self.published, []
        try:
            for message in published:
                self.publish(*message)
        except Exception as exc:  # noqa: BLE001 - the channel went in between: redelivered
            log.warning("could not publish again for %s: %r", self.request_id, exc)
            self.abandon()


def settle(ledgers: Iterable[AckLedger], acked: list[Any], failed: list[Any]) -> None:
    """Apply a batch of confirms (the tokens given to ``publish``: deliveries, or None for
    the informational ``sent`` events), then ack the ready deliveries per channel: a
    contiguous run in one ``multiple`` ack; refusals went out as they came."""
    ledgers = list(ledgers)
    for ledger in ledgers:
        ledger.batching = True
    try:
        for delivery in failed:
            if delivery is None:
                log.warning("a sent-event was not confirmed (informational; the outcome follows)")
            else:
                delivery.confirmed(False)
        for delivery in acked:
            if delivery is not None:
                delivery.confirmed(True)
    finally:
        for ledger in ledgers:
            ledger.batching = False
            ledger.flush()
