"""The agency HTTP transport (adapters/transport.py) through the REST adapter, against real local
servers: what goes on the wire, and how each way a call can fail is classified."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import ssl
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import accept_forever, read_head
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from adapters.base import OutcomeKind
from adapters.rest import RestAdapter
from core.domain.errors import PermanentAgencyError, TransientAgencyError
from core.settings import Settings

OP = {"op": {"path": "/x", "response": {"status": "status"}}}


@pytest.fixture
def tls_agency(fake_agency, pki) -> Iterator[Any]:
    """The fake agency over HTTPS, with a certificate from the test CA (no client certificate asked)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    agency = fake_agency
    server = make_server("127.0.0.1", 0, agency, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    agency.url = f"https://127.0.0.1:{server.server_port}"
    yield agency
    server.shutdown()
    server.server_close()


def _raw_server(answer: bytes) -> tuple[str, socket.socket]:
    """A server that reads one request head, writes ``answer`` and closes the connection."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            read_head(conn)
            conn.sendall(answer)
    accept_forever(listener, serve)
    return f"http://127.0.0.1:{listener.getsockname()[1]}", listener


# --- what goes on the wire --------------------------------------------------------------

def test_a_call_sends_json_with_the_session_headers_and_the_static_ones(fake_agency, make_agency, request_factory):
    fake_agency.route("POST", "/x", 200, {"status": "ok"})
    agency = make_agency(fake_agency.url, OP, statuses={"ok": "approved"},
                         options={"headers": {"accept": "application/vnd.agency+json", "X-Client": "satu"}})
    adapter = RestAdapter(agency)
    adapter.send(request_factory("op", {"name": "Bakso Pak Ñoño", "n": 1.5}))
    seen = fake_agency.last
    assert seen.body == json.dumps({"name": "Bakso Pak Ñoño", "n": 1.5}).encode()
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Content-Length"] == str(len(seen.body))
    assert seen.headers["User-Agent"] == "satupintu-adapter/1"
    assert seen.headers["Accept"] == "application/vnd.agency+json"  # the agency's own, once
    assert seen.headers["X-Client"] == "satu"
    assert "gzip" in seen.headers["Accept-Encoding"]
    adapter.close()


def test_a_get_has_no_body_and_a_delete_says_its_body_is_empty(fake_agency, make_agency, request_factory):
    operations = {"op": {"path": "/x", "lookup": {"path": "/x"}, "cancel": {"path": "/x"}}}
    fake_agency.route("GET", "/x", 200, {})
    fake_agency.route("DELETE", "/x", 204)
    adapter = RestAdapter(make_agency(fake_agency.url, operations))
    adapter.lookup(request_factory("op"))
    assert fake_agency.last.body == b"" and "Content-Length" not in fake_agency.last.headers
    assert adapter.cancel(request_factory("op")).kind is OutcomeKind.CANCELLED
    assert fake_agency.last.headers["Content-Length"] == "0"
    adapter.close()


def test_cookies_an_agency_sets_are_not_sent_back(fake_agency, make_agency, request_factory):
    fake_agency.route("POST", "/x", 200, {"status": "ok"}, headers={"Set-Cookie": "citizen=3171; Path=/"})
    adapter = RestAdapter(make_agency(fake_agency.url, OP, statuses={"ok": "approved"}))
    adapter.send(request_factory("op"))
    adapter.send(request_factory("op"))
    assert [s.headers.get("Cookie") for s in fake_agency.seen] == [None, None]
    adapter.close()


def test_gzip_answers_are_decoded(fake_agency, make_agency, request_factory):
    fake_agency.route("POST", "/x", 200, body=gzip.compress(b'{"status": "ok"}'),
                      headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    adapter = RestAdapter(make_agency(fake_agency.url, OP, statuses={"ok": "approved"}))
    assert adapter.send(request_factory("op")).kind is OutcomeKind.APPROVED
    adapter.close()


# --- how failures are classified --------------------------------------------------------

def test_no_connection_within_the_connect_timeout_is_transient(make_agency, request_factory):
    # A listener that never accepts: once its queue is full, the kernel ignores new SYNs.
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    fillers = []
    try:
        for _ in range(8):  # fill the accept queue
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        adapter = RestAdapter(make_agency(url, OP, connect_timeout=0.3))
        with pytest.raises(TransientAgencyError, match=r"POST /x: no connection within 0.3 s"):
            adapter.send(request_factory("op"))
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_an_answer_dripping_in_past_the_total_time_is_transient_and_says_so(make_agency, request_factory):
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # until the client hangs up
            read_head(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
            while not stop.wait(0.02):  # a byte well within every read timeout, for ever
                conn.sendall(b" ")
    accept_forever(listener, drip)
    try:
        adapter = RestAdapter(make_agency(f"http://127.0.0.1:{listener.getsockname()[1]}", OP,
                                          read_timeout=2.0, total_timeout=0.3))
        with pytest.raises(TransientAgencyError, match=r"POST /x: answer not complete within 0.3 s \(timeouts.total\)"):
            adapter.send(request_factory("op"))
        adapter.close()
    finally:
        stop.set()
        listener.close()


def test_an_egress_refusal_is_permanent_and_nothing_is_sent(fake_agency, make_agency, request_factory):
    adapter = RestAdapter(make_agency(fake_agency.url, OP), Settings(egress_allow_loopback=False))
    with pytest.raises(PermanentAgencyError, match="POST /x: refused by the egress policy: 127.0.0.1 is a loopback"):
        adapter.send(request_factory("op"))
    assert fake_agency.seen == []


def test_the_connected_address_is_checked_after_a_name_resolved(fake_agency, make_agency, request_factory):
    url = fake_agency.url.replace("127.0.0.1", "localhost")  # the name passes; the address it reaches does not
    adapter = RestAdapter(make_agency(url, OP), Settings(egress_allow_loopback=False))
    with pytest.raises(PermanentAgencyError, match="localhost connects to 127.0.0.1 is a loopback address"):
        adapter.send(request_factory("op"))
    assert fake_agency.seen == []


def test_an_answer_broken_off_mid_body_is_transient(make_agency, request_factory):
    url, listener = _raw_server(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                b"Content-Length: 100\r\n\r\n{\"status\": ")
    try:
        with pytest.raises(TransientAgencyError, match="answer broken off") as info:
            RestAdapter(make_agency(url, OP)).send(request_factory("op"))
        assert info.value.status_code == 200
    finally:
        listener.close()


def test_a_connection_closed_without_an_answer_is_a_connection_failure(make_agency, request_factory):
    url, listener = _raw_server(b"")
    try:
        with pytest.raises(TransientAgencyError, match="connection failed"):
            RestAdapter(make_agency(url, OP)).send(request_factory("op"))
    finally:
        listener.close()


def test_a_gzip_bomb_is_stopped_at_the_limit(fake_agency, make_agency, request_factory):
    bomb = gzip.compress(b" " * 200_000)
    fake_agency.route("POST", "/x", 200, body=bomb, headers={"Content-Encoding": "gzip"})
    adapter = RestAdapter(make_agency(fake_agency.url, OP, options={"max_answer_bytes": 10_000}))
    assert len(bomb) < 10_000
    with pytest.raises(PermanentAgencyError, match="larger than 10000 bytes"):
        adapter.send(request_factory("op"))
    adapter.close()


def test_after_an_oversized_answer_the_next_call_is_clean(fake_agency, make_agency, request_factory):
    adapter = RestAdapter(make_agency(fake_agency.url, {**OP, "big": {"path": "/big"}},
                                      statuses={"ok": "approved"}, options={"max_answer_bytes": 1000}))

    def streamed(_request):
        return Response((b"y" * 100 for _ in range(1000)), content_type="application/json")
    fake_agency.handle("POST", "/big", streamed)
    fake_agency.route("POST", "/x", 200, {"status": "ok"})
    for _ in range(3):
        with pytest.raises(PermanentAgencyError, match="larger than 1000 bytes"):
            adapter.send(request_factory("big"))
        assert adapter.send(request_factory("op")).kind is OutcomeKind.APPROVED
    adapter.close()


def test_an_untrusted_server_certificate_is_a_tls_failure(tls_agency, make_agency, request_factory):
    tls_agency.route("POST", "/x", 200, {"status": "ok"})
    adapter = RestAdapter(make_agency(tls_agency.url, OP))  # verify: the default CA bundle
    with pytest.raises(PermanentAgencyError, match="POST /x: TLS failed"):
        adapter.send(request_factory("op"))
    assert tls_agency.seen == []


@pytest.mark.parametrize("verify", ["ca", False])
def test_verify_names_a_ca_bundle_or_switches_verification_off(tls_agency, make_agency, request_factory, pki, verify):
    tls_agency.route("POST", "/x", 200, {"status": "ok"})
    options = {"verify": str(pki.ca) if verify == "ca" else False}
    adapter = RestAdapter(make_agency(tls_agency.url, OP, statuses={"ok": "approved"}, options=options))
    with pytest.warns() if verify is False else contextlib.nullcontext():
        assert adapter.send(request_factory("op")).kind is OutcomeKind.APPROVED
    adapter.close()


def test_a_missing_ca_bundle_is_a_setup_failure(tls_agency, make_agency, request_factory, tmp_path):
    adapter = RestAdapter(make_agency(tls_agency.url, OP, options={"verify": str(tmp_path / "nope.pem")}))
    with pytest.raises(PermanentAgencyError, match="cannot set up the connection.*nope.pem"):
        adapter.send(request_factory("op"))


def test_a_header_value_with_a_line_break_is_a_bad_request(fake_agency, make_agency, request_factory):
    adapter = RestAdapter(make_agency(fake_agency.url, OP))
    with pytest.raises(PermanentAgencyError, match="POST /x: bad request"):
        adapter.send(request_factory("op", headers={"X-Trace": "a\r\nX-Injected: 1"}))
    assert fake_agency.seen == []


def test_a_payload_that_is_not_json_is_a_bad_request(fake_agency, make_agency, request_factory):
    adapter = RestAdapter(make_agency(fake_agency.url, OP))
    with pytest.raises(PermanentAgencyError, match="bad request: the payload is not JSON"):
        adapter.send(request_factory("op", {"n": float("nan")}))
    assert fake_agency.seen == []


def test_a_redirect_of_a_get_is_not_followed_either(fake_agency, make_agency, request_factory):
    fake_agency.route("GET", "/x", 307, headers={"Location": fake_agency.url + "/y"})
    fake_agency.route("GET", "/y", 200, {})
    adapter = RestAdapter(make_agency(fake_agency.url, {"op": {"path": "/x", "lookup": {"path": "/x"}}}))
    with pytest.raises(PermanentAgencyError, match=r"HTTP 307 to http://127.0.0.1:\d+/y: redirects are not followed"):
        adapter.lookup(request_factory("op"))
    assert [s.path for s in fake_agency.seen] == ["/x"]


# --- the answer's framing and coding, from a hand-made agency on a real socket -------------

class ScriptedAgency:
    """Serves each request it reads (head and Content-Length body) with the next script:
    bytes to send, or a callable given the connection.  Counts connections and requests."""

    def __init__(self, *scripts: bytes | Callable[[socket.socket], None]) -> None:
        self.scripts = list(scripts)
        self.connections = self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        accept_forever(self.listener, self._serve, self._accepted)

    def _accepted(self) -> None:
        self.connections += 1

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            data = b""
            while self.scripts:
                data = read_head(conn, data)
                head, sep, data = data.partition(b"\r\n\r\n")
                if not sep:
                    return
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                self.requests += 1
                script = self.scripts.pop(0)
                if callable(script):
                    script(conn)
                else:
                    conn.sendall(script)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedAgency]]:
    made: list[ScriptedAgency] = []

    def make(*scripts: bytes | Callable[[socket.socket], None]) -> ScriptedAgency:
        made.append(ScriptedAgency(*scripts))
        return made[-1]
    yield make
    for agency in made:
        agency.close()


def ok(body: bytes = b'{"status": "ok"}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def chunked(body: bytes, size: int = 7) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                    for i in range(0, len(body), size)) + b"0\r\n\r\n"


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def send_and_close(data: bytes) -> Callable[[socket.socket], None]:
    def script(conn: socket.socket) -> None:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_RDWR)  # FIN: the end of a body framed by the connection
    return script


@pytest.fixture
def call(make_agency, request_factory) -> Callable[[ScriptedAgency], Any]:
    adapters: list[RestAdapter] = []

    def send(server: ScriptedAgency, **agency: Any) -> Any:
        if not adapters:
            adapters.append(RestAdapter(make_agency(server.url, OP, statuses={"ok": "approved"}, **agency)))
        return adapters[0].send(request_factory("op"))
    yield send
    for adapter in adapters:
        adapter.close()


def test_a_chunked_answer_is_put_back_together_and_the_connection_kept(scripted, call):
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b'{"status": "ok", "n": 12345}')
    server = scripted(answer, answer)
    assert call(server).output == {"status": "ok", "n": 12345}
    assert call(server).kind is OutcomeKind.APPROVED
    assert server.connections == 1


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
def test_compressed_answers_are_decoded_whatever_the_deflate_flavour(scripted, call, coding):
    body = {"gzip": gzip.compress, "deflate": zlib.compress, "raw-deflate": raw_deflate}[coding](b'{"status": "ok"}')
    server = scripted(ok(body, b"Content-Encoding: " + coding.removeprefix("raw-").encode() + b"\r\n"))
    assert call(server).kind is OutcomeKind.APPROVED


def test_garbage_after_a_complete_gzip_member_is_ignored(scripted, call):
    body = gzip.compress(b'{"status": "ok"}') + b"\x00\x00 padding a server left"
    assert call(scripted(ok(body, b"Content-Encoding: gzip\r\n"))).kind is OutcomeKind.APPROVED


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
def test_a_compressed_answer_cut_short_is_transient_not_a_partial_answer(scripted, call, coding, framing):
    whole = {"gzip": gzip.compress, "deflate": zlib.compress, "raw-deflate": raw_deflate}[coding](
        json.dumps({"status": "ok", "pad": "x" * 5000}).encode() * 3)
    body = whole[:len(whole) // 2]  # framed correctly, but the compressed stream stops half-way
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: " + coding.removeprefix("raw-").encode() + b"\r\n"
    if framing == "length":
        answer: Any = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    elif framing == "chunked":
        answer = head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, 100)
    else:
        answer = send_and_close(head + b"Connection: close\r\n\r\n" + body)
    server = scripted(answer, ok())
    with pytest.raises(TransientAgencyError, match="answer broken off.*truncated") as info:
        call(server)
    assert info.value.status_code == 200
    assert call(server).kind is OutcomeKind.APPROVED  # the framing was whole: its connection may carry the next


def test_a_kept_alive_connection_the_agency_dropped_is_not_reused(scripted, call):
    closed = threading.Event()

    def answer_then_drop(conn: socket.socket) -> None:
        conn.sendall(ok())  # says nothing of closing...
        conn.shutdown(socket.SHUT_RDWR)  # ...and closes while the connection idles in the pool
        closed.set()
    server = scripted(answer_then_drop, ok())
    assert call(server).kind is OutcomeKind.APPROVED
    assert closed.wait(5)
    assert call(server).kind is OutcomeKind.APPROVED
    assert server.connections == 2 and server.requests == 2


def test_a_request_the_agency_read_but_did_not_answer_is_not_sent_again(scripted, call):
    server = scripted(ok(), lambda conn: conn.shutdown(socket.SHUT_RDWR), ok())
    call(server)
    with pytest.raises(TransientAgencyError, match="connection failed"):
        call(server)
    assert server.requests == 2 and server.connections == 1  # the application went once, on one connection


def test_a_stalled_body_is_a_read_timeout(scripted, call):
    released = threading.Event()
    server = scripted(lambda conn: (conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
                                    released.wait(10)))
    try:
        with pytest.raises(TransientAgencyError, match=r"POST /x: no answer within 0.3 s"):
            call(server, read_timeout=0.3)
    finally:
        released.set()
