"""Publishing with publisher confirms: a message counts as sent only once the broker confirms it.

``Publisher`` waits for each confirm (simple; for a blocking connection).  ``ConfirmWindow``
keeps many publishes unconfirmed at once and settles them as the confirms arrive (what the
relay needs to move thousands of outbox rows a second, and the worker to keep calling while
earlier outcomes are confirmed).  Both publish through pika's public ``basic_publish``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from itertools import takewhile
from typing import Any

import pika
import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel

from core.domain.errors import PublishNotConfirmed

log = logging.getLogger("satupintu.broker")


# Built once: ``json.dumps`` with any non-default option builds a new encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def encode(body: dict[str, Any]) -> bytes:
    return _ENCODER.encode(body).encode()


def properties(headers: dict[str, Any] | None, message_id: str | None) -> pika.BasicProperties:
    """JSON, persistent, with our headers and the message id the broker's returns name."""
    return pika.BasicProperties(content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent,
                                headers=headers or {}, message_id=message_id)


class Publisher:
    """Confirming, mandatory, persistent publishes on one channel (one thread)."""

    def __init__(self, channel: BlockingChannel):
        self.channel = channel
        channel.confirm_delivery()

    def publish(self, exchange: str, routing_key: str, body: dict[str, Any], headers: dict[str, Any] | None = None,
                *, message_id: str | None = None) -> None:
        """Publish and wait for the confirm; raises ``PublishNotConfirmed`` on nack or no route."""
        props = properties(headers, message_id or body.get("message_id") or body.get("event_id"))
        try:
            self.channel.basic_publish(exchange, routing_key, encode(body), props, mandatory=True)
        except pika.exceptions.UnroutableError as exc:
            raise PublishNotConfirmed(f"no queue bound for {exchange} / {routing_key}") from exc
        except pika.exceptions.NackError as exc:
            raise PublishNotConfirmed(f"broker refused message for {exchange} / {routing_key}") from exc


class ConfirmWindow:
    """An asynchronous confirming publisher: a window of unconfirmed publishes on one channel.

    For a ``SelectConnection`` channel, used only on its ioloop thread.  ``publish()``
    returns at once with the delivery tag; the broker's ``Basic.Ack``/``Basic.Nack``
    (``multiple`` covering every tag up to the one named) settle the tags in order, and
    ``on_settled(acked, failed)`` receives the tokens passed to ``publish()``.  A mandatory
    message that no queue takes comes back as ``Basic.Return`` *before* its ack, so a
    returned tag counts as failed even though it is then acked.  Waiting for the confirm of
    each message in turn caps a publisher near 1,500 messages/s; a window of them goes
    into the tens of thousands with the same guarantee.  pika buffers what is published
    within one turn of the ioloop and writes it when the socket is writable.
    """

    def __init__(self, channel, on_settled: Callable[[list[Any], list[Any]], None]):
        self.channel = channel
        self.on_settled = on_settled
        self._next_tag = 0
        self._pending: dict[int, tuple[Any, str]] = {}  # tag -> (token, message id), in tag order
        self._by_message_id: dict[str, int] = {}
        self._returned: set[int] = set()
        channel.add_on_return_callback(self._on_return)

    def start(self, on_ready: Callable[[], None]) -> None:
        """Switch the channel to confirm mode; ``on_ready()`` runs once the broker agreed."""
        self.channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=lambda _frame: on_ready())

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def publish(self, exchange: str, routing_key: str, body: dict[str, Any], headers: dict[str, Any] | None,
                token: Any, *, message_id: str) -> int:
        """Publish persistent and mandatory; returns the delivery tag the confirm will name.
        A closed channel raises (pika's ``ChannelWrongStateError``) and nothing is counted."""
        self.channel.basic_publish(exchange, routing_key, encode(body), properties(headers, message_id),
                                   mandatory=True)
        self._next_tag += 1
        self._pending[self._next_tag] = (token, message_id)
        self._by_message_id[message_id] = self._next_tag
        return self._next_tag

    def forget_pending(self) -> list[Any]:
        """The tokens of every publish still waiting for its confirm, forgotten: for a channel
        being given up (its confirms, should any still come, then settle nothing)."""
        tokens = [token for token, _message_id in self._pending.values()]
        self._pending.clear()
        self._by_message_id.clear()
        self._returned.clear()
        return tokens

    def _on_return(self, _channel, method, props, _body) -> None:
        tag = self._by_message_id.get(props.message_id or "")
        if tag is not None:
            self._returned.add(tag)
        log.error("broker returned a message for %s / %s: %s", method.exchange, method.routing_key,
                  method.reply_text)

    def _on_confirm(self, frame) -> None:
        method = frame.method
        nack = isinstance(method, pika.spec.Basic.Nack)
        if method.multiple:
            tags = list(takewhile(lambda t: t <= method.delivery_tag, self._pending))
        else:
            tags = [method.delivery_tag] if method.delivery_tag in self._pending else []
        acked, failed = [], []
        for tag in tags:
            token, message_id = self._pending.pop(tag)
            if self._by_message_id.get(message_id) == tag:
                del self._by_message_id[message_id]
            if nack or tag in self._returned:
                self._returned.discard(tag)
                failed.append(token)
            else:
                acked.append(token)
        if tags:
            self.on_settled(acked, failed)
