"""Publishing with publisher confirms: a message counts as sent only once the broker confirms it.

``Publisher`` waits for each confirm (simple; what a worker needs between a call and its
ack).  ``ConfirmWindow`` keeps many publishes unconfirmed at once and settles them as the
confirms arrive (what the relay needs to move thousands of outbox rows a second).
"""

from __future__ import annotations

import contextlib
import json
import logging
import struct
from collections.abc import Callable, Iterator
from itertools import takewhile
from typing import Any

import pika
import pika.data
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from core.domain.errors import PublishNotConfirmed

log = logging.getLogger("satupintu.broker")


# Built once: ``json.dumps`` with any non-default option builds a new encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def encode(body: dict[str, Any]) -> bytes:
    return _ENCODER.encode(body).encode()


# --- AMQP 0-9-1 content frames, marshalled in one go (see ``ConfirmWindow``) -----------------

_FRAME_END = b"\xce"
_PUBLISH = struct.pack(">HHH", 60, 40, 0)  # Basic.Publish (class 60, method 40), ticket 0
_CONTENT_TYPE = b"\x10application/json"  # shortstr
_NO_HEADERS = b"\x00\x00\x00\x00"  # an empty field table
# Property flags: content-type, headers, delivery-mode, message-id (pika.spec.BasicProperties).
_PROPERTY_FLAGS = struct.pack(">H", (1 << 15) | (1 << 13) | (1 << 12) | (1 << 7))
_PERSISTENT = b"\x02"


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise pika.exceptions.ShortStringTooLong(raw)  # as pika's own encoder
    return bytes((len(raw),)) + raw


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + _FRAME_END


def publish_method_frame(channel: int, exchange: str, routing_key: str) -> bytes:
    """The ``Basic.Publish`` method frame (mandatory, not immediate), as pika marshals it."""
    return _frame(1, channel, _PUBLISH + _shortstr(exchange) + _shortstr(routing_key) + b"\x01")


_INT, _LONG = struct.Struct(">i").pack, struct.Struct(">q").pack


def _simple_table(headers: dict[str, Any]) -> bytes | None:
    """A field table of str, bool and int values, as pika encodes it (ints as ``I``, or ``l`` when
    they need 64 bits); None when any value is of another type."""
    out = []
    for key, value in headers.items():
        kind = type(value)
        if kind is str:
            raw = value.encode()
            item = b"S" + len(raw).to_bytes(4, "big") + raw
        elif kind is bool:
            item = b"t\x01" if value else b"t\x00"
        elif kind is int:
            item = b"I" + _INT(value) if -0x80000000 <= value <= 0x7FFFFFFF else b"l" + _LONG(value)
        else:
            return None
        out.append(_shortstr(key) + item)
    table = b"".join(out)
    return len(table).to_bytes(4, "big") + table


def content_frames(channel: int, body: bytes, headers: dict[str, Any] | None, message_id: str,
                   body_max: int) -> bytes:
    """The header frame (our four properties) and body frames of one message, as pika marshals them."""
    if headers:
        table = _simple_table(headers)
        if table is None:  # a value of another type: pika's encoder
            pieces: list[bytes] = []
            pika.data.encode_table(pieces, headers)
            table = b"".join(pieces)
    else:
        table = _NO_HEADERS
    properties = _PROPERTY_FLAGS + _CONTENT_TYPE + table + _PERSISTENT + _shortstr(message_id)
    out = _frame(2, channel, struct.pack(">HxxQ", 60, len(body)) + properties)
    for start in range(0, len(body), body_max):
        out += _frame(3, channel, body[start:start + body_max])
    return out


class Publisher:
    """Confirming, mandatory, persistent publishes on one channel (one thread)."""

    def __init__(self, channel: BlockingChannel):
        self.channel = channel
        channel.confirm_delivery()

    def publish(self, exchange: str, routing_key: str, body: dict[str, Any], headers: dict[str, Any] | None = None,
                *, message_id: str | None = None) -> None:
        """Publish and wait for the confirm; raises ``PublishNotConfirmed`` on nack or no route."""
        props = pika.BasicProperties(
            content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent,
            headers=headers or {}, message_id=message_id or body.get("message_id") or body.get("event_id"))
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
    into the tens of thousands with the same guarantee.

    A publish is marshalled here, in one piece (method, header and body frames: exactly
    the bytes pika's ``basic_publish`` produces, pinned by a unit test), and handed to the
    connection's transport in one write, where pika builds a ``BasicProperties`` and three
    frame objects and writes (and later ``send()``s) each frame separately.  Inside
    ``with window.batch():`` the publishes are joined into one write at the end of the
    block, so a relay batch or a worker's finished calls cost one socket send.
    """

    def __init__(self, channel, on_settled: Callable[[list[Any], list[Any]], None]):
        self.channel = channel
        self.on_settled = on_settled
        connection = getattr(channel, "connection", None)
        # The fast path needs these pika internals (pika 1.x); without them, pika's own path.
        self._emit = getattr(connection, "_adapter_emit_data", None)
        self._fast = (self._emit is not None and hasattr(connection, "_body_max_length")
                      and hasattr(connection, "bytes_sent") and hasattr(connection, "frames_sent")
                      and hasattr(channel, "_raise_if_not_open"))
        self._method_frames: dict[tuple[str, str], bytes] = {}
        self._buffer: list[bytes] | None = None  # publishes held back by ``batch()``
        self._buffered_frames = 0
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
        """Publish persistent and mandatory; returns the delivery tag the confirm will name."""
        if self._fast:
            self._write(exchange, routing_key, encode(body), headers, message_id)
        else:
            props = pika.BasicProperties(content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent,
                                         headers=headers or {}, message_id=message_id)
            self.channel.basic_publish(exchange, routing_key, encode(body), props, mandatory=True)
        self._next_tag += 1
        self._pending[self._next_tag] = (token, message_id)
        self._by_message_id[message_id] = self._next_tag
        return self._next_tag

    def _write(self, exchange: str, routing_key: str, body: bytes, headers: dict[str, Any] | None,
               message_id: str) -> None:
        channel = self.channel
        channel._raise_if_not_open()  # as basic_publish: a closed channel raises, nothing is counted
        connection = channel.connection
        method = self._method_frames.get((exchange, routing_key))
        if method is None:
            if len(self._method_frames) > 4096:
                self._method_frames.clear()
            method = self._method_frames[(exchange, routing_key)] = publish_method_frame(
                channel.channel_number, exchange, routing_key)
        data = method + content_frames(channel.channel_number, body, headers, message_id,
                                       connection._body_max_length)
        frames = 2 + -(-len(body) // connection._body_max_length)
        if self._buffer is not None:
            self._buffer.append(data)
            self._buffered_frames += frames
            return
        self._send(connection, data, frames)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Publishes inside the block go out in one write at its end (in order; tags as usual)."""
        if self._buffer is not None or not self._fast:
            yield  # nested, or pika's own path: nothing to join
            return
        self._buffer, self._buffered_frames = [], 0
        try:
            yield
        finally:
            data, frames = b"".join(self._buffer), self._buffered_frames
            self._buffer, self._buffered_frames = None, 0
            if data and self.channel.is_open:
                self._send(self.channel.connection, data, frames)

    def _send(self, connection: Any, data: bytes, frames: int) -> None:
        """Hand marshalled frames to the transport, counted as pika counts its own (the
        heartbeat checker reads ``bytes_sent``)."""
        connection.bytes_sent += len(data)
        connection.frames_sent += frames
        self._emit(data)

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
