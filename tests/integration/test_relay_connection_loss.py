"""The relay and a broker connection lost with publishes unconfirmed, on the real RabbitMQ.

A TCP proxy of the test's own stands between the relay and the broker.  Muted, it still
carries the relay's publishes to the broker but drops everything the broker answers, so
their confirms never arrive; then it cuts the connection.  The rows were published but
never confirmed: the relay must publish them again on its next connection at once (not
after its lease, here ten minutes), flagged ``x-maybe-sent`` so that the worker looks
them up at the agency before filing.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import uuid

import pytest
from sqlalchemy import func, select
from support import AMQP_URL, wait_until

from gateway.relay import Relay

pytestmark = pytest.mark.timeout(120)


class MutingProxy:
    """Forwards TCP connections to ``target``; ``mute()`` drops what the target sends back,
    ``cut()`` closes every connection open now (new ones are forwarded normally)."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.muted: set[socket.socket] = set()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if answers and source in self.muted:
                    continue  # swallowed: confirms, heartbeats, everything
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    @property
    def connections(self) -> int:
        with self.lock:
            return len(self.pairs)

    def mute(self) -> None:
        with self.lock:
            self.muted.update(upstream for _client, upstream in self.pairs)

    def cut(self) -> None:
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def proxy():
    host_port = AMQP_URL.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1) if ":" in host_port else (host_port, "5672")
    proxy = MutingProxy((host, int(port)))
    yield proxy
    proxy.close()


def submit(client, auth, example, i: int) -> str:  # noqa: ANN001
    body = dict(example, data=dict(example["data"], company=dict(example["data"]["company"], name=f"PT Putus {i}")))
    response = client.post("/v1/applications", json=body, headers={**auth, "Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def test_rows_unconfirmed_when_the_connection_is_lost_are_published_again_at_once_flagged_maybe_sent(
        engine, catalog, settings, broker, client, auth, example, proxy):  # noqa: ANN001
    from gateway.store import tables as t
    url = AMQP_URL.replace(AMQP_URL.split("@", 1)[1].split("/", 1)[0], f"127.0.0.1:{proxy.port}")
    relay = Relay(engine, catalog, amqp_urls=(url,), namespace=settings.namespace, lease=600)
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    try:
        queue = broker.names.agency_queue("company-registry")
        # Connected (the declaring connection comes and goes first): one bundle goes through.
        submit(client, auth, example, 0)
        wait_until(lambda: broker.depth(queue) == 1, 30, message="the first row to be published")
        wait_until(lambda: relay.published == 1, 10, message="its confirm")

        proxy.mute()
        for i in (1, 2, 3):
            submit(client, auth, example, i)
        # The broker has them; the relay never hears so.
        wait_until(lambda: broker.depth(queue) == 4, 30, message="the rows to reach the broker")
        with engine.connect() as conn:
            unsent = conn.execute(select(func.count()).select_from(t.outbox).where(t.outbox.c.sent_at.is_(None))).scalar()
        assert unsent == 3 and relay.published == 1

        proxy.cut()
        # Published again on the next connection, confirmed and marked sent -- long before the lease.
        def all_sent() -> bool:
            with engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(t.outbox)
                                    .where(t.outbox.c.sent_at.is_(None))).scalar() == 0
        wait_until(all_sent, 60, message="the unconfirmed rows to be published again and confirmed")
        assert relay.published == 4

        copies: dict[str, list[bool]] = {}
        while True:
            method, props, body = broker.channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            copies.setdefault(json.loads(body)["request_id"], []).append(bool((props.headers or {}).get("x-maybe-sent")))
        assert len(copies) == 4
        flagged = sorted(flags for flags in copies.values() if len(flags) == 2)
        assert flagged == [[False, True]] * 3, copies  # the first copy plain, the second flagged
    finally:
        relay.stop()
        thread.join(30)


class _BreakingWindow:
    """A ``ConfirmWindow`` whose channel goes after ``takes`` publishes (pika raises then)."""

    def __init__(self, takes: int) -> None:
        import types
        self.channel = types.SimpleNamespace(is_open=True)
        self.takes = takes
        self.pending: list = []

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    @contextlib.contextmanager
    def batch(self):
        yield

    def publish(self, exchange, routing_key, body, headers, token, *, message_id) -> None:
        import pika.exceptions
        if len(self.pending) == self.takes:
            self.channel.is_open = False
            raise pika.exceptions.ChannelWrongStateError("Channel is closed.")
        self.pending.append(token)


def _bare_session(relay: Relay, window: _BreakingWindow):
    from gateway.relay import _Session
    session = object.__new__(_Session)
    session.relay, session.window, session.confirmed = relay, window, []
    session.closing, session.timer, session.timer_at, session.deadline = False, None, 0.0, None
    return session


def test_rows_claimed_as_the_channel_goes_are_given_back_at_once(engine, catalog, settings, client, auth, example):  # noqa: ANN001
    import pika.exceptions

    from gateway.store import tables as t
    relay = Relay(engine, catalog, amqp_urls=("amqp://unused",), namespace=settings.namespace, lease=600)
    for i in (1, 2, 3):
        submit(client, auth, example, i)
    session = _bare_session(relay, _BreakingWindow(takes=1))
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        session._cycle()
    with engine.connect() as conn:
        claims = [r.claimed_until is not None for r in conn.execute(select(t.outbox.c.claimed_until)
                                                                       .order_by(t.outbox.c.id))]
    # The first went to the channel (its session's end gives it back, flagged maybe-sent); the
    # two the channel never took are claimable again now, as never sent.
    assert claims == [True, False, False]
    assert relay.claimable()

    # A session already ending claims nothing.
    ending = _bare_session(relay, _BreakingWindow(takes=10))
    ending.closing = True
    ending._cycle()
    assert ending.window.pending == []
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.outbox)
                            .where(t.outbox.c.claimed_until.is_not(None))).scalar() == 1


def test_every_row_the_broker_refuses_is_given_back_also_while_the_session_closes(
        engine, catalog, settings, client, auth, example):  # noqa: ANN001
    import datetime as dt
    import types

    from gateway.store import records
    from gateway.store import tables as t
    relay = Relay(engine, catalog, amqp_urls=("amqp://unused",), namespace=settings.namespace, lease=600)
    for i in (1, 2, 3):
        submit(client, auth, example, i)
    with engine.begin() as conn:
        rows = records.claim_outbox(conn, limit=10, lease=dt.timedelta(seconds=600))
    session = _bare_session(relay, _BreakingWindow(takes=10))
    session.connection = types.SimpleNamespace(is_open=False)
    # A channel opened during a fail-over nacks a whole batch, in several confirm frames: the
    # first ends the session, the rest arrive while it closes.
    session._on_settled([], rows[:1])
    assert session.closing
    session._on_settled([], rows[1:])
    with engine.connect() as conn:
        claimed = conn.execute(select(func.count()).select_from(t.outbox)
                               .where(t.outbox.c.claimed_until.is_not(None))).scalar()
    assert claimed == 0  # all three claimable by the next session at once, not after the lease
