"""Quick calls are answered on the server's I/O loop, everything else in its thread pool,
and a connection's answers keep their order either way."""

from __future__ import annotations

import io
import json
import socket
import threading
import time

import pytest

from sandbox.agency import Agency
from sandbox.agency_server import ON_IO_LOOP, AgencyServer
from sandbox.company_registry import create_app
from sandbox.front_desk import FrontDesk
from sandbox.rest import quick_routes


class Recorder:
    """A WSGI app answering each path with itself, noting where each call was answered."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, str]] = []

    def __call__(self, environ, start_response):
        self.calls.append(
            (environ["PATH_INFO"], environ[ON_IO_LOOP], threading.current_thread().name)
        )
        environ["wsgi.input"].read()
        body = environ["PATH_INFO"].encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]


@pytest.fixture
def served():
    """(app, port) of a server whose quick calls are ``POST /quick``."""
    app = Recorder()
    server = AgencyServer(
        "check",
        app,
        "127.0.0.1",
        0,
        threads=2,
        connection_limit=10,
        quick=lambda method, path: (method, path) == ("POST", "/quick"),
    )
    port = server.start()
    yield app, port
    server.begin_stop()
    server.stop(time.monotonic() + 2)


def request(method: str, path: str) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}".encode()


def answers(port: int, raw: bytes, count: int) -> list[bytes]:
    """The bodies of the first ``count`` answers to ``raw``, sent in one go."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        reader = sock.makefile("rb")
        bodies = []
        for _ in range(count):
            length = None
            while (line := reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            bodies.append(reader.read(length))
        reader.close()
    return bodies


def test_a_quick_call_is_answered_on_the_loop_and_others_in_the_pool(served):
    app, port = served
    assert answers(port, request("POST", "/quick"), 1) == [b"/quick"]
    assert answers(port, request("GET", "/quick"), 1) == [b"/quick"]
    assert answers(port, request("POST", "/slow"), 1) == [b"/slow"]
    where = [(path, on_loop, name.startswith("waitress-")) for path, on_loop, name in app.calls]
    assert where == [("/quick", True, False), ("/quick", False, True), ("/slow", False, True)]


def test_pipelined_calls_are_answered_in_order_wherever_they_run(served):
    app, port = served
    paths = ["/quick", "/slow", "/quick", "/quick", "/slow", "/quick"]
    raw = b"".join(request("POST", path) for path in paths)
    assert answers(port, raw, len(paths)) == [path.encode() for path in paths]
    assert [path for path, _, _ in app.calls] == paths
    assert app.calls[0][1] is True  # the first was answered on the loop


def test_after_begin_stop_no_call_is_answered_on_the_loop():
    app = Recorder()
    server = AgencyServer(
        "check", app, "127.0.0.1", 0, threads=1, connection_limit=10, quick=lambda m, p: True
    )
    port = server.start()
    try:
        server.begin_stop()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request("POST", "/quick"))
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sock.recv(1)
        assert app.calls == []
    finally:
        server.stop(time.monotonic() + 1)


def registry_desk(**knobs) -> FrontDesk:
    agency = Agency("company-registry", "rest", knobs)
    app = create_app(agency)
    return FrontDesk(agency, app, quick_routes(app))


def test_the_registry_filing_is_quick_unless_a_latency_is_set():
    desk = registry_desk()
    assert desk.is_quick("POST", "/companies")
    assert not desk.is_quick("GET", "/companies")
    assert not desk.is_quick("POST", "/companies/")
    assert not desk.is_quick("GET", "/_sandbox/stats")
    desk.agency.knobs.update({"latency_ms": 50})
    assert not desk.is_quick("POST", "/companies")


def test_a_call_judged_quick_never_sleeps_on_the_loop_even_if_latency_is_set_meanwhile():
    desk = registry_desk(latency_ms=2000)  # set after the call was judged quick
    body = json.dumps({"company_name": "PT Maju"}).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/companies",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_IDEMPOTENCY_KEY": "k-1",
        "wsgi.input": io.BytesIO(body),
        ON_IO_LOOP: True,
    }
    statuses = []
    started = time.monotonic()
    b"".join(desk(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    assert time.monotonic() - started < 1
    assert statuses == ["201 CREATED"]
