"""The SOAP adapter's total time and answer size (adapters/deadlines.py, adapters/transport.py).

A hand-made agency on a real socket sends its answer one byte at a time, each byte well
within the read timeout, in the head or in the body: the call must end as a transient
"timeouts.total" failure instead of lasting as long as the agency likes, and the worker's
slot is freed.  An endless answer ends as a permanent "max_answer_bytes" failure with
memory bounded.  An answer that arrives whole in time is never refused.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from support import accept_forever
from test_soap_and_xroad import OPS, WSDL, answer, envelope

from adapters.deadlines import REAPER
from adapters.soap import SoapAdapter
from adapters.soap_client import forget_documents
from adapters.transport import agency_session
from core.domain.errors import PermanentAgencyError, TransientAgencyError
from core.settings import Settings

pytestmark = pytest.mark.timeout(60)

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\n"


class Dripping:
    """Answers every POST with ``script(conn)``; counts connections."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.script = script
        self.stop = threading.Event()
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        accept_forever(self._listener, self._serve, self._accepted)

    def _accepted(self) -> None:
        self.connections += 1

    def _serve(self, conn: socket.socket) -> None:
        try:
            read_request(conn)
            self.script(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def drip(self, data: bytes, every: float = 0.05) -> Callable[[socket.socket], None]:
        def script(conn: socket.socket) -> None:
            for i in range(len(data)):
                if self.stop.is_set():
                    return
                conn.sendall(data[i:i + 1])
                time.sleep(every)
        return script

    def close(self) -> None:
        self.stop.set()
        self._listener.close()


@pytest.fixture
def build(fake_agency, make_agency) -> Iterator[Callable[..., tuple[SoapAdapter, Dripping]]]:
    forget_documents()
    fake_agency.route("GET", "/", 200, body=WSDL)
    made: list[Dripping] = []

    def make(script: Callable[[Dripping], Callable[[socket.socket], None]], *, total: float = 1.0,
             **options) -> tuple[SoapAdapter, Dripping]:
        server = Dripping(lambda conn: None)
        server.script = script(server)
        made.append(server)
        agency = make_agency(server.url, OPS, adapter="soap", statuses={"50": "approved"}, read_timeout=2.0,
                             total_timeout=total, options={"wsdl": f"{fake_agency.url}/?wsdl", **options})
        return SoapAdapter(agency), server
    yield make
    for server in made:
        server.close()


def read_request(conn: socket.socket) -> None:
    """Read one whole request (head and its Content-Length body) from ``conn``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionResetError("the client went away")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += conn.recv(65536)


def body_of(text: str) -> bytes:
    return text.encode()


def whole(text: str) -> bytes:
    data = body_of(text)
    return HEAD + b"Content-Length: %d\r\n\r\n" % len(data) + data


@pytest.mark.parametrize("where", ["head", "body", "body-until-close"])
def test_an_answer_dripping_within_the_read_timeout_ends_at_the_total_time(build, request_factory, where):
    data = whole(envelope(answer()))
    if where == "body-until-close":  # no length: the reaper's cut would look like the body's end
        text = body_of(envelope(answer()))
        cut = len(HEAD) + len(b"Connection: close\r\n\r\n")
        dripped = HEAD + b"Connection: close\r\n\r\n" + text
        script = lambda server: lambda conn: (conn.sendall(dripped[:cut]), server.drip(dripped[cut:])(conn))  # noqa: E731
    elif where == "head":
        script = lambda server: server.drip(data)  # noqa: E731 - every byte 50 ms apart: the head alone takes seconds
    else:
        cut = data.index(b"\r\n\r\n") + 4
        script = lambda server: lambda conn: (conn.sendall(data[:cut]), server.drip(data[cut:])(conn))  # noqa: E731
    adapter, server = build(script, total=1.0)
    with pytest.raises(TransientAgencyError, match=r"answer not complete within 1 s \(timeouts.total\)"):
        adapter.send(request_factory(payload={"nik": "3171012345670123"}))
    # The retry: the cut connection is not reused, and an agency answering at once is heard.
    server.script = lambda conn: conn.sendall(data)
    assert adapter.send(request_factory(payload={})).reference == "R-1"
    assert server.connections == 2


def test_an_answer_arriving_whole_in_time_is_read_and_the_connection_kept(build, request_factory):
    data = whole(envelope(answer(reference="R-7")))

    def twice(server: Dripping) -> Callable[[socket.socket], None]:
        def script(conn: socket.socket) -> None:
            conn.sendall(data)
            read_request(conn)
            conn.sendall(data)
            conn.settimeout(0.2)
            while not server.stop.is_set():  # keep it open, unread bytes none, until the test ends
                try:
                    if not conn.recv(65536):
                        return
                except TimeoutError:
                    continue
        return script
    adapter, server = build(twice, total=5.0)
    assert adapter.send(request_factory(payload={})).reference == "R-7"
    assert adapter.send(request_factory(payload={})).reference == "R-7"
    assert server.connections == 1  # the deadline's watch does not spoil keep-alive


def test_an_endless_answer_is_refused_at_max_answer_bytes(build, request_factory):
    def endless(server: Dripping) -> Callable[[socket.socket], None]:
        def script(conn: socket.socket) -> None:
            conn.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
            piece = b"<x>" + b"a" * 60_000 + b"</x>"
            sent = 0
            while not server.stop.is_set() and sent < 64 * 1024 * 1024:
                conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
        return script
    adapter, _server = build(endless, total=30.0, max_answer_bytes=100_000)
    with pytest.raises(PermanentAgencyError, match=r"answer larger than 100000 bytes \(options.max_answer_bytes\)"):
        adapter.send(request_factory(payload={}))


def test_a_declared_length_over_the_limit_is_refused_before_reading(build, request_factory):
    big = HEAD + b"Content-Length: 5000000\r\n\r\n<e/>"
    adapter, _server = build(lambda _server: lambda conn: (conn.sendall(big), time.sleep(2)), max_answer_bytes=1000)
    with pytest.raises(PermanentAgencyError, match="max_answer_bytes"):
        adapter.send(request_factory(payload={}))


def test_an_operation_timeout_of_its_own_raises_the_default_total(make_agency, fake_agency):
    forget_documents()
    agency = make_agency(fake_agency.url, OPS, adapter="soap", read_timeout=2.0, total_timeout=60.0,
                         options={"wsdl": f"{fake_agency.url}/?wsdl", "operation_timeout": 45})
    assert SoapAdapter(agency).total_timeout == 90
    agency = make_agency(fake_agency.url, OPS, adapter="soap", read_timeout=2.0, total_timeout=60.0,
                         options={"wsdl": f"{fake_agency.url}/?wsdl"})
    assert SoapAdapter(agency).total_timeout == 60


def test_the_reaper_shuts_only_the_sockets_of_calls_past_their_deadline():
    left, right = socket.socketpair()
    other_left, other_right = socket.socketpair()
    try:
        with REAPER.watch(0.2) as watch:
            REAPER.note(left)
            REAPER.note(left)  # noted once
            left.settimeout(10)
            assert left.recv(10) == b""  # shut down by the reaper: EOF, not a 10 s wait
            assert watch.expired and watch.sockets == [left]
        with REAPER.watch(30) as calm:
            REAPER.note(other_left)
        assert not calm.expired and calm.sockets == []  # done: forgotten, never shut
        other_right.sendall(b"x")
        assert other_left.recv(1) == b"x"
        REAPER.note(other_left)  # outside a watch: nothing happens
    finally:
        for s in (left, right, other_left, other_right):
            s.close()


def test_the_connection_pool_keeps_as_many_connections_as_calls_may_run(make_agency, fake_agency):
    for concurrency, kept in ((16, 16), (4, 10)):
        agency = make_agency(fake_agency.url, OPS, adapter="soap", concurrency=concurrency,
                             options={"wsdl": f"{fake_agency.url}/?wsdl"})
        session = agency_session(agency, Settings(), total_timeout=None)
        assert session.get_adapter(fake_agency.url).poolmanager.connection_pool_kw["maxsize"] == kept
