"""A broker that accepts TCP but never speaks AMQP, then comes through: the roles carry on.

pika reports a handshake that never ends as ``AMQPConnectorStackTimeout`` ("Timeout during
AMQP handshake"), which is not an ``AMQPConnectionError``; a role that retried only those
died at start-up (issue 19).  Here the listener holds every connection silently until the
test lets it proxy to the real RabbitMQ; the role must have retried meanwhile and then work.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from types import SimpleNamespace
from urllib.parse import urlsplit

import pika
import pytest
from support import AMQP_URL, accept_forever, wait_until

from broker.connection import connect, connect_with_backoff
from core.domain.errors import BrokerUnavailable


class SilentThenProxy:
    """A TCP listener on port 0: holds connections without a word until ``let_through()``,
    then pipes each new connection to the real broker."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.through = threading.Event()
        self.held: list[socket.socket] = []
        target = urlsplit(AMQP_URL)
        self.target = (target.hostname or "127.0.0.1", target.port or 5672)
        accept_forever(self.listener, self._serve, self._count)

    def _count(self) -> None:
        self.accepted += 1

    def url(self, stack_timeout: float = 1.0) -> str:
        parts = urlsplit(AMQP_URL)
        netloc = f"{parts.username}:{parts.password}@127.0.0.1:{self.port}"
        return f"amqp://{netloc}{parts.path or '/%2F'}?stack_timeout={stack_timeout}"

    def let_through(self) -> None:
        self.through.set()

    def _serve(self, client: socket.socket) -> None:
        if not self.through.is_set():
            self.held.append(client)  # never answered; the client gives up on its own
            return
        upstream = socket.create_connection(self.target)

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
        pipe(upstream, client)

    def close(self) -> None:
        self.listener.close()
        for s in self.held:
            s.close()


@pytest.fixture
def silent_broker():
    proxy = SilentThenProxy()
    yield proxy
    proxy.close()


def test_a_handshake_that_never_ends_is_broker_unavailable(silent_broker):
    with pytest.raises(BrokerUnavailable, match="no RabbitMQ answers"):
        connect([silent_broker.url(stack_timeout=0.5)], name="test-silent")


def test_connect_with_backoff_retries_a_handshake_timeout_until_the_broker_comes(silent_broker):
    result: dict[str, object] = {}

    def role() -> None:
        try:
            result["connection"] = connect_with_backoff([silent_broker.url()], name="test-backoff")
        except BaseException as exc:  # noqa: BLE001 - what the old code died of, reported to the test
            result["error"] = exc

    thread = threading.Thread(target=role, daemon=True)
    thread.start()
    # Two connections taken while silent: the first handshake timed out and the role tried again.
    wait_until(lambda: silent_broker.accepted >= 2 or "error" in result, 60, message="a second connection attempt")
    assert "error" not in result, f"the role died instead of retrying: {result['error']!r}"
    silent_broker.let_through()
    thread.join(60)
    assert "error" not in result, f"the role died instead of retrying: {result['error']!r}"
    connection = result["connection"]
    assert isinstance(connection, pika.BlockingConnection) and connection.is_open
    channel = connection.channel()
    assert channel.queue_declare("", exclusive=True).method.queue
    connection.close()


def test_a_worker_started_against_a_silent_broker_works_once_the_broker_comes(
        silent_broker, settings, catalog, broker, sandbox):  # noqa: ANN001
    import dataclasses

    from broker.worker import Worker
    from gateway.workflow import dispatch_message
    worker = Worker(catalog, dataclasses.replace(settings, amqp_urls=(silent_broker.url(),)),
                    agencies=["company-registry"])
    worker.start()
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    thread.start()
    try:
        wait_until(lambda: silent_broker.accepted >= 2 or not thread.is_alive(), 60,
                   message="a second connection attempt")
        assert thread.is_alive(), "the worker died on the handshake timeout instead of retrying"
        silent_broker.let_through()
        app = SimpleNamespace(id=f"app_{uuid.uuid4().hex}", service="business-startup")
        request = SimpleNamespace(id=f"req_{uuid.uuid4().hex}", step="company", agency="company-registry",
                                  operation="register_company")
        row = dispatch_message(app=app, request=request, payload={"company_name": "PT Sabar",
                                                                  "owner_nik": "3171012345670123"})
        broker.channel.basic_publish(broker.names.exchange(row["exchange"]), row["routing_key"],
                                     json.dumps(row["body"]).encode(),
                                     pika.BasicProperties(headers=row["headers"], delivery_mode=2))

        def outcome():
            method, _props, body = broker.channel.basic_get(broker.names.tracker, auto_ack=True)
            if method is None:
                return None
            event = json.loads(body)
            return event if event["request_id"] == request.id and event["type"] == "outcome" else None

        event = wait_until(outcome, 60, message="the worker's outcome event")
        assert event["status"] in {"accepted", "approved"}
        assert thread.is_alive()
    finally:
        worker.stop()
        thread.join(60)


def test_readyz_answers_503_with_the_reason_while_the_broker_never_finishes_its_handshake(
        silent_broker, settings, catalog, engine, monkeypatch):  # noqa: ANN001
    import dataclasses

    from gateway.api import create_app, health
    monkeypatch.setattr(health, "BROKER_CHECK_TTL", 0)  # no answer of an earlier test reused
    app = create_app(dataclasses.replace(settings, amqp_urls=(silent_broker.url(stack_timeout=0.5),)),
                     catalog=catalog, engine=engine)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == 503 and body["type"].endswith("/not-ready")
    assert "broker" in body["detail"] and "Timeout during AMQP handshake" in body["detail"]
    assert body["checks"]["store"]["ok"] is True and body["checks"]["broker"]["ok"] is False
