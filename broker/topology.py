"""The exchanges and queues of one namespace, declared idempotently at start-up.

    <ns>.dispatch   direct, key = agency id  ──▶ <ns>.agency.<agency>   quorum queue
    <ns>.retry.<N>s fanout ──▶ queue with TTL N s, dead-lettered back to <ns>.dispatch
    <ns>.status     topic, key = <service>.<agency>.<status> ──▶ <ns>.tracker
    <ns>.dead       fanout ──▶ <ns>.dead   (failed after retries, or poison messages)
"""

from __future__ import annotations

from collections.abc import Iterable

from pika.adapters.blocking_connection import BlockingChannel

from core.model import Agency

from .retry import poll_delays

# How often RabbitMQ may redeliver one message to crashing workers before dead-lettering
# it.  Counts only redeliveries (nacks, lost consumers), not our own retries.
DELIVERY_LIMIT = 5


class Names:
    """Exchange and queue names of one namespace."""

    def __init__(self, namespace: str):
        self.ns = namespace
        self.dispatch = f"{namespace}.dispatch"
        self.status = f"{namespace}.status"
        self.tracker = f"{namespace}.tracker"
        self.dead = f"{namespace}.dead"

    def agency_queue(self, agency: str) -> str:
        return f"{self.ns}.agency.{agency}"

    def retry(self, seconds: float) -> str:
        return f"{self.ns}.retry.{_tier(seconds)}"

    def exchange(self, short: str) -> str:
        """The full name of an exchange stored without namespace in the outbox."""
        return f"{self.ns}.{short}"


def _tier(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _quorum(extra: dict | None = None) -> dict:
    args = {"x-queue-type": "quorum"}
    args.update(extra or {})
    return args


def declare(channel: BlockingChannel, names: Names, *, agencies: Iterable[str] = (),
            retry_delays: Iterable[float] = ()) -> None:
    """Declare everything; safe to run from every process at every start."""
    channel.exchange_declare(names.dispatch, exchange_type="direct", durable=True)
    channel.exchange_declare(names.status, exchange_type="topic", durable=True)
    channel.exchange_declare(names.dead, exchange_type="fanout", durable=True)
    channel.queue_declare(names.dead, durable=True, arguments=_quorum())
    channel.queue_bind(names.dead, names.dead)
    channel.queue_declare(names.tracker, durable=True, arguments=_quorum())
    channel.queue_bind(names.tracker, names.status, routing_key="#")
    for agency in agencies:
        queue = names.agency_queue(agency)
        channel.queue_declare(queue, durable=True, arguments=_quorum({
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": names.dead,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }))
        channel.queue_bind(queue, names.dispatch, routing_key=agency)
    for seconds in sorted(set(retry_delays)):
        name = names.retry(seconds)
        channel.exchange_declare(name, exchange_type="fanout", durable=True)
        # Expired messages go back to dispatch with their original routing key (the agency).
        channel.queue_declare(name, durable=True, arguments=_quorum({
            "x-message-ttl": int(seconds * 1000),
            "x-dead-letter-exchange": names.dispatch,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }))
        channel.queue_bind(name, name)


def declare_for(channel: BlockingChannel, names: Names, agencies: Iterable[Agency]) -> None:
    """Declare the topology for ``agencies``, with their retry and poll delay tiers."""
    agencies = list(agencies)
    declare(channel, names, agencies=[a.id for a in agencies], retry_delays=_delays(agencies))


def namespace_queues(names: Names, agencies: Iterable[Agency]) -> list[str]:
    """Every queue ``declare_for`` declares for ``agencies``."""
    agencies = list(agencies)
    return [names.agency_queue(a.id) for a in agencies] + [names.retry(d) for d in sorted(_delays(agencies))] + [
        names.tracker, names.dead]


def _delays(agencies: Iterable[Agency]) -> set[float]:
    delays: set[float] = set()
    for agency in agencies:
        delays.update(agency.retry_delays)
        if agency.decisions == "poll":
            delays.update(poll_delays(agency))
    return delays


def delete_for(channel: BlockingChannel, names: Names, agencies: Iterable[Agency]) -> None:
    """Delete a namespace's queues and exchanges (tests, demo clean-up, ``satupintu namespace
    delete``; loses the messages in them)."""
    agencies = list(agencies)
    for queue in namespace_queues(names, agencies):
        channel.queue_delete(queue)
    for exchange in [names.dispatch, names.status, names.dead] + [names.retry(d) for d in _delays(agencies)]:
        channel.exchange_delete(exchange)
