"""Adversarial answers to the REST transport's own HTTP exchange (adapters/http_exchange.py,
driven through adapters/rest_transport.py), on real sockets: endless heads and trailers,
answers cut at every byte, smuggling-style framing, resets, stalled sends, TLS leftovers,
and the pool closed in the middle of a call.  Every failure must be a TransportFailure, no
connection with leftover bytes may be reused, and memory must stay bounded."""

from __future__ import annotations

import gzip
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import accept_forever

from adapters.egress import EgressPolicy
from adapters.rest_transport import (
    AnswerTimedOut,
    BadRequest,
    BrokenOff,
    ConnectionFailed,
    RestTransport,
    TooLarge,
)

Script = Callable[[socket.socket], None]
CAP = 16 * 1024 * 1024  # what an endless answer sends at most before giving up by itself


class Agency:
    """A server answering the n-th request it reads (on any connection) with ``scripts[n](conn)``;
    a script returning leaves the connection open for the next request."""

    def __init__(self, scripts: list[Script], tls: ssl.SSLContext | None = None) -> None:
        self.scripts, self.tls = list(scripts), tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.sent = 0  # bytes an endless script managed to send before the client hung up
        self.release = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._listener.getsockname()[1]}"
        accept_forever(self._listener, self._serve, self._accepted)

    def _accepted(self) -> None:
        self.connections += 1

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                self.requests.append(head)
                self.scripts.pop(0)(conn)
                if conn.fileno() < 0:
                    return
        except OSError:
            pass
        finally:
            conn.close()

    def stream(self, first: bytes, piece: bytes) -> Script:
        """Send ``first``, then ``piece`` again and again until the client hangs up (or CAP)."""
        def script(conn: socket.socket) -> None:
            conn.sendall(first)
            try:
                while self.sent < CAP:
                    conn.sendall(piece)
                    self.sent += len(piece)
            except OSError:
                pass
            conn.close()
        return script

    def close(self) -> None:
        self.release.set()
        self._listener.close()


def send(data: bytes) -> Script:
    return lambda conn: conn.sendall(data)


def send_and_close(data: bytes) -> Script:
    def script(conn: socket.socket) -> None:
        conn.sendall(data)
        conn.close()  # FIN: the end of a body framed by the connection
    return script


def byte_by_byte(data: bytes) -> Script:
    def script(conn: socket.socket) -> None:
        for i in range(len(data)):
            conn.sendall(data[i:i + 1])
            time.sleep(0.001)  # so that most bytes arrive in a recv of their own
    return script


def reset(data: bytes = b"") -> Script:
    def script(conn: socket.socket) -> None:
        conn.sendall(data)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST, not FIN
    return script


def ok(body: bytes = b"{}", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def chunked(body: bytes, size: int = 1, trailer: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                    for i in range(0, len(body), size)) + b"0\r\n" + trailer + b"\r\n"


@pytest.fixture
def agency() -> Iterator[Callable[..., Agency]]:
    made: list[Agency] = []

    def make(*scripts: Script, tls: ssl.SSLContext | None = None) -> Agency:
        made.append(Agency(list(scripts), tls))
        return made[-1]
    yield make
    for server in made:
        server.close()


def make_transport(**kwargs: Any) -> RestTransport:
    settings: dict[str, Any] = {"auth": None, "verify": True, "cert": None, "connect_timeout": 2.0,
                                "read_timeout": 2.0, "maxsize": 2}
    settings.update(kwargs)
    return RestTransport(EgressPolicy(), headers={"User-Agent": "satupintu-adapter/1"}, **settings)


@pytest.fixture
def transport() -> Iterator[RestTransport]:
    transport = make_transport()
    yield transport
    transport.close()


def call(transport: RestTransport, server: Agency, method: str = "GET", body: bytes | None = None,
         max_bytes: int = 10_000, path: str = "/x") -> Any:
    return transport.call(method, server.url + path, {}, body, max_bytes)


# --- endless answers: a failure with memory bounded, never a hang ----------------------------

@pytest.mark.parametrize(("first", "piece"), [
    (b"HTTP/1.1 200 OK\r\n", b"X-Padding: abcdefghijklmnopqrstuvwxyz\r\n" * 100),  # ever more headers
    (b"HTTP/1.1 200 OK\r\nX-Long: ", b"a" * 4096),  # one header value that never ends
    (b"", b"HTTP/1.1 100 Continue\r\n\r\n" * 100),  # interim answers, never the final one
])
def test_an_answer_head_that_never_ends_is_refused_once_past_the_limit(agency, transport, first, piece):
    server = agency(lambda conn: server.stream(first, piece)(conn))
    with pytest.raises(ConnectionFailed, match="head is larger than"):
        call(transport, server)
    assert server.sent < CAP  # the transport gave up; it did not read (and keep) all of it


def test_trailers_that_never_end_are_too_large_not_kept(agency, transport):
    server = agency(lambda conn: server.stream(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n", b"X-Trailer: t\r\n" * 100)(conn))
    with pytest.raises(TooLarge) as info:
        call(transport, server, max_bytes=1000)
    assert info.value.status == 200 and server.sent < CAP


def test_a_compressed_body_that_never_decodes_to_anything_is_too_large(agency, transport):
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # raw deflate: empty stored blocks, forever
    start = packer.compress(b"") + packer.flush(zlib.Z_SYNC_FLUSH)
    empty_block = packer.flush(zlib.Z_FULL_FLUSH)
    server = agency(lambda conn: server.stream(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nConnection: close\r\n\r\n" + start, empty_block * 1000)(conn))
    with pytest.raises(TooLarge):
        call(transport, server, max_bytes=1000)
    assert server.sent < CAP


# --- framing does not depend on how the answer is cut ----------------------------------------

def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


TEXT = b'{"status": "registered", "reference": "AHU-0001"}' * 3
CUT_ANSWERS = {
    "length": ok(TEXT),
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(TEXT, 7),
    "chunk-extensions-and-trailers": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     + chunked(TEXT, 50, b"X-Checksum: abc\r\n").replace(b"\r\n", b";ext=1\r\n", 1),
    "gzip": ok(gzip.compress(TEXT), b"Content-Encoding: gzip\r\n"),
    "deflate": ok(zlib.compress(TEXT), b"Content-Encoding: deflate\r\n"),
    "raw-deflate": ok(_raw_deflate(TEXT), b"Content-Encoding: deflate\r\n"),
    "interim-first": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok(TEXT),
}


@pytest.mark.parametrize("name", sorted(CUT_ANSWERS))
def test_an_answer_sent_one_byte_at_a_time_is_read_whole(agency, transport, name):
    server = agency(byte_by_byte(CUT_ANSWERS[name]), send(ok(b"next")))
    assert call(transport, server).body == TEXT
    assert call(transport, server).body == b"next"
    assert server.connections == 1


def test_raw_deflate_in_one_byte_chunks_is_decoded(agency, transport):
    # each chunk reaches the decoder on its own, whatever the packets: the first holds one byte
    server = agency(send(b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + chunked(_raw_deflate(TEXT), 1)))
    assert call(transport, server).body == TEXT


def test_garbage_after_a_complete_gzip_member_is_ignored(agency, transport):
    body = gzip.compress(TEXT) + b"\x00\x00 padding a server left"
    server = agency(send(ok(body, b"Content-Encoding: gzip\r\n")))
    assert call(transport, server).body == TEXT


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
def test_a_compressed_body_cut_short_is_broken_off_not_a_partial_answer(agency, transport, coding, framing):
    whole = {"gzip": gzip.compress, "deflate": zlib.compress, "raw-deflate": _raw_deflate}[coding](TEXT * 50)
    body = whole[:len(whole) // 2]  # framed correctly, but the compressed stream stops half-way
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: " + coding.removeprefix("raw-").encode() + b"\r\n"
    if framing == "length":
        answer = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    elif framing == "chunked":
        answer = head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, 100)
    else:
        answer = head + b"Connection: close\r\n\r\n" + body
    server = agency(send_and_close(answer) if framing == "close" else send(answer), send(ok(b"next")))
    with pytest.raises(BrokenOff, match="truncated"):
        call(transport, server)
    assert call(transport, server).body == b"next"
    assert server.connections == 2  # the cut answer's connection was not reused


def test_an_empty_body_marked_gzip_is_an_empty_answer(agency, transport):
    server = agency(send(ok(b"", b"Content-Encoding: gzip\r\n")))
    assert call(transport, server).body == b""


# --- answers that must not leave the connection reusable ------------------------------------

def test_an_http_1_0_answer_with_transfer_encoding_is_not_kept(agency, transport):
    # RFC 9112 6.1: its framing is faulty, so the connection is closed after it, keep-alive or not
    server = agency(send(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"2\r\nhi\r\n0\r\n\r\n"), send(ok(b"next")))
    assert call(transport, server).body == b"hi"
    assert call(transport, server).body == b"next"
    assert server.connections == 2


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 7\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nhi",
])
def test_smuggling_style_framing_is_a_connection_failure_and_the_connection_dropped(agency, transport, answer):
    server = agency(send(answer + ok(b"smuggled")), send(ok(b"next")))
    with pytest.raises(ConnectionFailed, match="not valid HTTP"):
        call(transport, server)
    assert call(transport, server).body == b"next"
    assert server.connections == 2


def test_a_second_answer_sent_before_the_next_request_is_never_taken_for_its_answer(agency, transport):
    sent = threading.Event()

    def answer_twice(conn: socket.socket) -> None:
        conn.sendall(ok(b"first"))
        time.sleep(0.05)
        conn.sendall(ok(b"unasked"))  # arrives while the connection idles in the pool
        sent.set()
    server = agency(answer_twice, send(ok(b"second")))
    assert call(transport, server).body == b"first"
    assert sent.wait(5)
    time.sleep(0.05)  # let it reach the client's socket
    assert call(transport, server).body == b"second"
    assert server.connections == 2


@pytest.mark.parametrize("status", [b"000", b"099"])
def test_a_status_below_100_is_not_http(agency, transport, status):
    server = agency(send(b"HTTP/1.1 " + status + b" Odd\r\nContent-Length: 2\r\n\r\nhi"))
    with pytest.raises(ConnectionFailed, match="status"):
        call(transport, server)


@pytest.mark.parametrize(("answer", "status", "reason"), [
    (b"HTTP/1.1 999 Whatever\r\nContent-Length: 0\r\n\r\n", 999, "Whatever"),
    (b"HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n", 503, ""),
    ("HTTP/1.1 200 Berhasil ✓\r\nX-Nama: Budi ✓\r\nContent-Length: 0\r\n\r\n".encode(), 200, "Berhasil ✓"),
])
def test_odd_status_lines_and_non_latin_1_bytes_are_read_as_sent(agency, transport, answer, status, reason):
    server = agency(send(answer))
    read = call(transport, server)
    assert read.status == status
    assert read.reason.encode("latin-1").decode() == reason  # the bytes kept, as Latin-1 text


# --- resets, empty answers and stalled sends ------------------------------------------------

@pytest.mark.parametrize(("script", "failure"), [
    (reset(), ConnectionFailed),
    (reset(b"HTTP/1.1 200 OK\r\nContent-Len"), ConnectionFailed),
    (reset(b"HTTP/1.1 201 Created\r\nContent-Length: 10\r\n\r\nabc"), BrokenOff),
    (lambda conn: conn.close(), ConnectionFailed),
])
def test_a_reset_or_an_empty_answer_is_a_transport_failure(agency, transport, script, failure):
    server = agency(script)
    with pytest.raises(failure):
        call(transport, server, "POST", b'{"citizen": 1}')
    assert len(server.requests) == 1


def test_a_request_the_agency_never_reads_times_out_instead_of_hanging(agency):
    stuck = socket.create_server(("127.0.0.1", 0))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(stuck.accept()[0]), daemon=True).start()
    transport = make_transport(read_timeout=0.3)
    try:
        with pytest.raises(ConnectionFailed, match="sending the request on a new connection failed"):
            transport.call("POST", f"http://127.0.0.1:{stuck.getsockname()[1]}/x", {}, b"x" * (64 << 20), 10)
    finally:
        transport.close()
        stuck.close()
        for conn in accepted:
            conn.close()


def dripping(data: bytes, every: float) -> Script:
    """Send ``data`` a byte at a time, ``every`` seconds apart: each read gets something."""
    def script(conn: socket.socket) -> None:
        for i in range(len(data)):
            conn.sendall(data[i:i + 1])
            time.sleep(every)
    return script


def test_an_answer_dripping_in_past_the_total_time_is_a_timeout_and_its_connection_dropped(agency):
    body = b"x" * 200
    server = agency(dripping(ok(body), 0.01), send(ok()))
    transport = make_transport(read_timeout=2.0, total_timeout=0.3)  # no single read waits 2 s
    try:
        with pytest.raises(AnswerTimedOut, match="still arriving"):
            call(transport, server)
        assert call(transport, server).status == 200
        assert server.connections == 2  # the half-read connection was not used again
    finally:
        transport.close()


def test_without_a_total_time_a_dripping_answer_is_read_to_its_end(agency):
    server = agency(dripping(ok(b"y" * 20), 0.01))
    transport = make_transport(read_timeout=2.0, total_timeout=None)
    try:
        assert call(transport, server).body == b"y" * 20
    finally:
        transport.close()


def test_an_answer_that_arrives_whole_after_the_total_time_is_taken(agency):
    def late(conn: socket.socket) -> None:
        time.sleep(0.5)
        conn.sendall(ok(b'{"late": true}'))
    server = agency(late)
    transport = make_transport(read_timeout=2.0, total_timeout=0.1)  # a guard against drips, not a latency bound
    try:
        assert call(transport, server).body == b'{"late": true}'
    finally:
        transport.close()


def test_a_target_that_cannot_be_encoded_is_a_bad_request(agency, transport):
    server = agency(send(ok()))
    with pytest.raises(BadRequest):
        call(transport, server, path="/x/\udcff")
    assert server.connections == 0


# --- the pool ---------------------------------------------------------------------------

def test_a_connection_given_back_after_the_transport_closed_is_closed_not_kept(agency):
    transport = make_transport()
    started = threading.Event()

    def slow(conn: socket.socket) -> None:
        started.set()
        server.release.wait(5)
        conn.sendall(ok(b"late"))
    server = agency(slow, send(ok(b"after")))
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(call(transport, server).body))
    worker.start()
    assert started.wait(5)
    transport.close()
    server.release.set()
    worker.join(10)
    assert result == [b"late"]
    assert all(not origin._idle for origin in transport._origins.values())
    assert call(transport, server).body == b"after"
    assert server.connections == 2  # the in-flight connection was not pooled after close()
    transport.close()


def test_an_origin_evicted_while_in_use_still_answers_and_keeps_nothing(agency):
    transport = make_transport(num_pools=1)
    started = threading.Event()

    def slow(conn: socket.socket) -> None:
        started.set()
        first.release.wait(5)
        conn.sendall(ok(b"first"))
    first, second = agency(slow, send(ok(b"again"))), agency(send(ok(b"second")))
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(call(transport, first).body))
    worker.start()
    assert started.wait(5)
    assert call(transport, second).body == b"second"  # evicts the first origin
    first.release.set()
    worker.join(10)
    assert result == [b"first"]
    assert call(transport, first).body == b"again"
    assert first.connections == 2
    transport.close()


# --- TLS ---------------------------------------------------------------------------------

@pytest.fixture
def tls_server_context(pki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    return context


def test_a_tls_connection_is_kept_and_reused(agency, pki, tls_server_context):
    server = agency(send(ok(b"1")), send(ok(b"2")), send(ok(b"3")), tls=tls_server_context)
    transport = make_transport(verify=str(pki.ca))
    try:
        assert [call(transport, server).body for _ in range(3)] == [b"1", b"2", b"3"]
    finally:
        transport.close()
    assert server.connections == 1  # TLS 1.3 session tickets do not make the idle connection look dropped


def test_tls_records_left_after_an_answer_are_never_read_as_the_next_answer(agency, pki, tls_server_context):
    def answer_then_more(conn: socket.socket) -> None:
        conn.sendall(ok(b"first"))
        conn.sendall(ok(b"unasked"))  # a record of its own, after the answer's
    server = agency(answer_then_more, send(ok(b"second")), tls=tls_server_context)
    transport = make_transport(verify=str(pki.ca))
    try:
        assert call(transport, server).body == b"first"
        time.sleep(0.05)
        assert call(transport, server).body == b"second"
    finally:
        transport.close()
    assert server.connections == 2


def test_tls_garbage_in_the_middle_of_an_answer_is_a_transport_failure(agency, pki, tls_server_context):
    def corrupt(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        raw = socket.socket(fileno=conn.detach())  # below TLS: bytes that are not a valid record
        raw.sendall(b"\x17\x03\x03\x00\x05hello")
        server.release.wait(5)
        raw.close()
    server = agency(corrupt, tls=tls_server_context)
    transport = make_transport(verify=str(pki.ca))
    try:
        with pytest.raises(BrokenOff):
            call(transport, server)
    finally:
        transport.close()
