"""The REST transport's own HTTP exchange (adapters/http_exchange.py, driven through
adapters/rest_transport.py) against scripted servers on real sockets: how answers are
framed and decoded, when a connection is kept, and what is refused before sending."""

from __future__ import annotations

import gzip
import socket
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import accept_forever
from werkzeug.wrappers import Response

from adapters.egress import EgressPolicy
from adapters.rest_transport import (
    BadRequest,
    BrokenOff,
    ConnectionFailed,
    ReadTimedOut,
    RestTransport,
    TooLarge,
)

Reply = bytes | Callable[[socket.socket], None]  # bytes are sent and the connection kept


class ScriptedAgency:
    """A server that answers the n-th request it reads, on whichever connection, with
    ``replies[n]``: bytes to send, or a callable given the connection (which may close it)."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.connections = 0
        self.released = threading.Event()  # lets stalled replies end
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        accept_forever(self._listener, self._serve, self._accepted)

    def _accepted(self) -> None:
        with self._lock:
            self.connections += 1

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            pending = b""
            while True:
                request, pending = _read_request(conn, pending)
                if request is None:
                    return
                with self._lock:
                    self.requests.append(request)
                    reply = self.replies.pop(0)
                try:
                    if callable(reply):
                        reply(conn)
                    else:
                        conn.sendall(reply)
                except OSError:
                    return
                if conn.fileno() < 0:
                    return

    def close(self) -> None:
        self.released.set()
        self._listener.close()


def _read_request(conn: socket.socket, data: bytes) -> tuple[bytes | None, bytes]:
    """One request (head and Content-Length body) and what was read past it; None at EOF."""
    while b"\r\n\r\n" not in data:
        try:
            chunk = conn.recv(65536)
        except OSError:
            return None, b""
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += conn.recv(65536)
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


def _close_after(data: bytes) -> Callable[[socket.socket], None]:
    def reply(conn: socket.socket) -> None:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_RDWR)
        conn.close()
    return reply


def _ok(body: bytes = b"{}", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@pytest.fixture
def agency() -> Iterator[Callable[..., ScriptedAgency]]:
    made: list[ScriptedAgency] = []

    def make(*replies: Reply) -> ScriptedAgency:
        made.append(ScriptedAgency(list(replies)))
        return made[-1]
    yield make
    for server in made:
        server.close()


@pytest.fixture
def transport() -> Iterator[RestTransport]:
    transport = RestTransport(EgressPolicy(), headers={"User-Agent": "satupintu-adapter/1", "Accept": "*/*"},
                              auth=None, verify=True, cert=None, connect_timeout=2.0, read_timeout=0.5, maxsize=2)
    yield transport
    transport.close()


def _call(transport: RestTransport, server: ScriptedAgency, method: str = "GET", body: bytes | None = None,
          headers: dict[str, Any] | None = None, max_bytes: int = 10_000, path: str = "/x") -> Any:
    return transport.call(method, server.url + path, headers or {}, body, max_bytes)


# --- what goes on the wire --------------------------------------------------------------

def test_the_request_is_one_head_with_host_and_length_and_then_the_body(agency, transport):
    server = agency(_ok())
    _call(transport, server, "POST", b'{"n": 1}', {"Idempotency-Key": "req-1"}, path="/a/b?c=d")
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /a/b?c=d HTTP/1.1"
    port = server.url.rsplit(":", 1)[1].encode()
    assert b"Host: 127.0.0.1:" + port in lines
    assert b"Content-Length: 8" in lines and b"Idempotency-Key: req-1" in lines
    assert body == b'{"n": 1}'


@pytest.mark.parametrize("headers", [
    {"X-Trace": "a\r\nX-Injected: 1"},
    {"X-Trace": "a\nb"},
    {"X-Trace": "a\x00b"},
    {"X-Bad Name": "1"},
    {"X-Bad:Name": "1"},
    {"": "1"},
    {"X-Bad\r\nName": "1"},
])
def test_a_header_that_could_smuggle_another_is_refused_before_connecting(agency, transport, headers):
    server = agency(_ok())
    with pytest.raises(BadRequest):
        _call(transport, server, headers=headers)
    assert server.connections == 0 and server.requests == []


@pytest.mark.parametrize(("method", "path"), [("GET /y HTTP/1.1\r\nX:", "/x"), ("GE\x00T", "/x"),
                                              ("GET", "/x\r\nX-Injected: 1"), ("GET", "/x\x00")])
def test_a_method_or_target_with_control_characters_is_refused(agency, transport, method, path):
    server = agency(_ok())
    with pytest.raises(BadRequest):
        _call(transport, server, method, path=path)
    assert server.connections == 0


# --- how answers are framed and decoded -------------------------------------------------

def test_a_chunked_answer_is_put_back_together_and_the_connection_kept(agency, transport):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    server = agency(chunked, _ok(b"again"))
    assert _call(transport, server).body == b"hello world"
    assert _call(transport, server).body == b"again"
    assert server.connections == 1


def test_an_answer_ended_by_closing_the_connection_is_complete_and_the_connection_not_kept(agency, transport):
    server = agency(_close_after(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"), _ok(b"next"))
    answer = _call(transport, server)
    assert (answer.status, answer.body) == (200, b"all of it")
    assert _call(transport, server).body == b"next"
    assert server.connections == 2


def test_an_answer_saying_connection_close_is_not_kept(agency, transport):
    server = agency(_ok(b"1", b"Connection: close\r\n"), _ok(b"2"))
    assert _call(transport, server).body == b"1"
    assert _call(transport, server).body == b"2"
    assert server.connections == 2


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
def test_compressed_answers_are_decoded(agency, transport, coding):
    text = b'{"status": "ok"}' * 50
    if coding == "gzip":
        body = gzip.compress(text)
    elif coding == "deflate":
        body = zlib.compress(text)
    else:
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body = packer.compress(text) + packer.flush()
    name = b"gzip" if coding == "gzip" else b"deflate"
    server = agency(_ok(body, b"Content-Encoding: " + name + b"\r\n"))
    assert _call(transport, server).body == text
    assert b"Accept-Encoding: gzip, deflate" not in server.requests[0]  # the transport's own headers only
    assert b"Accept-Encoding: identity" in server.requests[0]


def test_a_gzip_answer_larger_than_the_limit_once_decoded_is_too_large(agency, transport):
    body = gzip.compress(b"x" * 50_000)
    server = agency(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    with pytest.raises(TooLarge) as info:
        _call(transport, server, max_bytes=10_000)
    assert info.value.status == 200 and len(info.value.partial or b"") <= 10_000


def test_a_declared_length_above_the_limit_is_refused_before_reading(agency, transport):
    server = agency(b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n")  # the body never comes
    with pytest.raises(TooLarge) as info:
        _call(transport, server, max_bytes=1000)
    assert info.value.partial is None


def test_an_interim_100_continue_is_skipped(agency, transport):
    server = agency(b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n" + _ok(b"final", b"X-Final: yes\r\n"))
    answer = _call(transport, server, "POST", b"{}")
    assert (answer.status, answer.reason, answer.body) == (200, "OK", b"final")
    assert answer.headers.get("x-final") == "yes" and answer.headers.get("X-Interim") is None


def test_a_head_answer_has_no_body_whatever_its_length_says(agency, transport):
    server = agency(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", _ok(b"after"))
    answer = _call(transport, server, "HEAD")
    assert (answer.status, answer.body, answer.headers["Content-Length"]) == (200, b"", "1234")
    assert _call(transport, server).body == b"after"


@pytest.mark.parametrize("status", [204, 304])
def test_no_content_and_not_modified_have_no_body(agency, transport, status):
    server = agency(b"HTTP/1.1 %d Whatever\r\nContent-Length: 5\r\n\r\n" % status, _ok(b"next"))
    assert _call(transport, server).body == b""
    assert _call(transport, server).body == b"next"
    assert server.connections == 1


def test_repeated_headers_are_joined_and_looked_up_in_any_case(agency, transport):
    server = agency(_ok(b"{}", b"X-Road-Error: a\r\nx-road-error: b\r\nLocation: /y\r\n"))
    headers = _call(transport, server).headers
    assert headers.get("X-ROAD-ERROR") == "a, b" and headers["location"] == "/y"
    assert "Content-Length" in list(headers) and headers.get("Missing", "?") == "?"


def test_a_redirect_is_returned_as_it_is(agency, transport):
    server = agency(b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n")
    answer = _call(transport, server)
    assert (answer.status, answer.headers.get("Location")) == (302, "http://elsewhere/")
    assert len(server.requests) == 1


# --- connections and failures -----------------------------------------------------------

def test_a_kept_alive_connection_the_agency_dropped_is_not_reused(agency, transport):
    closed = threading.Event()

    def answer_then_drop(conn: socket.socket) -> None:
        conn.sendall(_ok(b"first"))  # says nothing of closing...
        conn.shutdown(socket.SHUT_RDWR)  # ...and closes while the connection idles in the pool
        conn.close()
        closed.set()
    server = agency(answer_then_drop, _ok(b"second"))
    assert _call(transport, server).body == b"first"
    assert closed.wait(5)
    assert _call(transport, server).body == b"second"
    assert server.connections == 2 and len(server.requests) == 2


def test_a_request_the_agency_read_but_did_not_answer_is_not_sent_again(agency, transport):
    def drop(conn: socket.socket) -> None:
        conn.close()
    server = agency(_ok(b"first"), drop, _ok(b"never"))
    _call(transport, server)
    with pytest.raises(ConnectionFailed, match="closed the connection without answering"):
        _call(transport, server, "POST", b'{"citizen": 1}')
    assert len(server.requests) == 2 and server.connections == 1  # the application went once, on one connection


def test_a_stalled_body_is_a_read_timeout(agency, transport):
    server = agency(lambda conn: (conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
                                  server.released.wait(10)))
    with pytest.raises(ReadTimedOut, match="stopped sending its HTTP 200 answer"):
        _call(transport, server)


def test_no_answer_within_the_read_timeout_is_a_read_timeout(agency, transport):
    server = agency(lambda conn: server.released.wait(10))
    with pytest.raises(ReadTimedOut, match="sent nothing"):
        _call(transport, server)


def test_an_answer_that_is_not_http_is_a_connection_failure(agency, transport):
    server = agency(_close_after(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"))
    with pytest.raises(ConnectionFailed, match="answer is not valid HTTP"):
        _call(transport, server)


def test_a_body_that_is_not_valid_chunking_is_broken_off_with_its_status(agency, transport):
    server = agency(_close_after(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n"))
    with pytest.raises(BrokenOff, match="not valid HTTP") as info:
        _call(transport, server)
    assert info.value.status == 201


def test_after_a_failed_answer_the_next_call_gets_a_clean_connection(agency, transport):
    server = agency(b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\npartial", _ok(b"clean"))
    with pytest.raises(TooLarge):
        _call(transport, server, max_bytes=100)
    assert _call(transport, server).body == b"clean"
    assert server.connections == 2


def test_threads_sharing_a_small_pool_each_get_their_own_answers(fake_agency):
    fake_agency.handle("POST", "/echo", lambda request: Response(request.headers["X-Call"], status=201))
    transport = RestTransport(EgressPolicy(), headers={}, auth=None, verify=True, cert=None,
                              connect_timeout=2.0, read_timeout=5.0, maxsize=2)
    wrong: list[tuple[str, bytes]] = []

    def work(thread: int) -> None:
        for i in range(20):
            call = f"{thread}-{i}"
            answer = transport.call("POST", fake_agency.url + "/echo", {"X-Call": call}, b"{}", 1000)
            if answer.body != call.encode():
                wrong.append((call, answer.body))
    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    transport.close()
    assert wrong == [] and len(fake_agency.seen) == 160
