"""Publishing with publisher confirms: a message counts as sent only once the broker confirms it."""

from __future__ import annotations

import json
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from gateway.domain.errors import PublishNotConfirmed


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode()


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
