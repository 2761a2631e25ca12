"""``ConfirmWindow`` marshals publishes itself (broker/publisher.py): the bytes must be pika's."""

from __future__ import annotations

import datetime as dt

import pika
import pika.exceptions
import pytest
from pika import frame, spec

from broker.publisher import ConfirmWindow, content_frames, encode, publish_method_frame


def _pika_bytes(channel: int, exchange: str, routing_key: str, body: bytes, headers, message_id: str,
                body_max: int) -> bytes:
    """What pika's ``Connection._send_message`` writes for the same publish."""
    props = pika.BasicProperties(content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent,
                                 headers=headers or {}, message_id=message_id)
    out = frame.Method(channel, spec.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                                   mandatory=True)).marshal()
    out += frame.Header(channel, len(body), props).marshal()
    for start in range(0, len(body), body_max):
        out += frame.Body(channel, body[start:start + body_max]).marshal()
    return out


@pytest.mark.parametrize("headers", [
    None,
    {},
    {"x-attempt": 2, "x-last-error": "HTTP 503 from agensi ☂", "traceparent": "00-abc-def-01"},
    {"x-maybe-sent": True, "x-deferred": False, "x-poll-started": -(2**63), "x-round": 2**63 - 1, "x-edge": 2**31, "x-low": -(2**31), "x-high": 2**31 - 1, "": ""},
    {"x-maybe-sent": True, "x-deferred": 3, "x-poll-started": 1_790_000_000, "nested": {"a": [1, "b", None]},
     "x-big": 2**40, "x-when": dt.datetime(2026, 11, 28, 12, 0)},
])
@pytest.mark.parametrize("size", [0, 300, 20_000])
def test_marshalled_publish_is_byte_for_byte_what_pika_writes(headers, size):
    body = encode({"request_id": "r" * size, "note": "ẞ"})[:max(size, 2)] if size else b""
    ours = publish_method_frame(7, "sp.status", "svc.agency.accepted") + content_frames(
        7, body, headers, "msg-1", 4096)
    assert ours == _pika_bytes(7, "sp.status", "svc.agency.accepted", body, headers, "msg-1", 4096)


def test_a_short_string_too_long_is_refused_as_pika_refuses_it():
    with pytest.raises(pika.exceptions.ShortStringTooLong):
        publish_method_frame(1, "x" * 256, "key")


class _Connection:
    def __init__(self):
        self.written: list[bytes] = []
        self.bytes_sent = 0
        self.frames_sent = 0
        self._body_max_length = 131_064

    def _adapter_emit_data(self, data: bytes) -> None:
        self.written.append(data)


class _Channel:
    channel_number = 3

    def __init__(self):
        self.connection = _Connection()
        self.is_open = True

    def add_on_return_callback(self, _callback) -> None:
        pass

    def _raise_if_not_open(self) -> None:
        if not self.is_open:
            raise pika.exceptions.ChannelWrongStateError("Channel is closed.")


def test_a_batch_goes_out_in_one_write_with_tags_in_order():
    channel = _Channel()
    window = ConfirmWindow(channel, lambda acked, failed: None)
    with window.batch():
        tags = [window.publish("sp.status", "k", {"n": n}, None, n, message_id=f"m{n}") for n in range(3)]
        assert channel.connection.written == []
    assert tags == [1, 2, 3]
    assert len(channel.connection.written) == 1
    expected = b"".join(_pika_bytes(3, "sp.status", "k", encode({"n": n}), None, f"m{n}", 131_064)
                        for n in range(3))
    assert channel.connection.written[0] == expected
    assert channel.connection.frames_sent == 9 and channel.connection.bytes_sent == len(expected)
    assert window.in_flight == 3


def test_outside_a_batch_each_publish_is_written_at_once():
    channel = _Channel()
    window = ConfirmWindow(channel, lambda acked, failed: None)
    window.publish("sp.status", "k", {"n": 1}, {"x-attempt": 2}, "t", message_id="m")
    assert channel.connection.written == [_pika_bytes(3, "sp.status", "k", encode({"n": 1}), {"x-attempt": 2},
                                                      "m", 131_064)]


def test_a_publish_on_a_closed_channel_raises_and_counts_nothing():
    channel = _Channel()
    channel.is_open = False
    window = ConfirmWindow(channel, lambda acked, failed: None)
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        window.publish("sp.status", "k", {"n": 1}, None, "t", message_id="m")
    assert window.in_flight == 0 and channel.connection.written == []


def test_event_ids_are_time_ordered_version_7_uuids_in_hex():
    import uuid

    from broker.messages import new_id
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for value in list(ids)[:200]:
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value and parsed.version == 7 and parsed.variant == uuid.RFC_4122
