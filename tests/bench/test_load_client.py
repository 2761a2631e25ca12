"""The bench's bare-socket HTTP client reads what servers really send (on real sockets)."""

from __future__ import annotations

import socket
import threading

import pytest
from support import read_head

from bench.load import Client


class CannedServer:
    """Answers each request it reads with the next canned answer; None closes the connection."""

    def __init__(self, answers: list[bytes | None]):
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            conn, _ = self.listener.accept()
            self.connections += 1
            with conn:
                while self.answers:
                    data = read_head(conn)
                    if not data:
                        break
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    while len(body) < length:
                        body += conn.recv(65536)
                    self.requests.append(head + b"\r\n\r\n" + body)
                    answer = self.answers.pop(0)
                    if answer is None:
                        break  # close without answering: the client retries on a fresh connection
                    conn.sendall(answer)
                    if b"Connection: close" in answer:
                        break


@pytest.fixture
def serve():  # noqa: ANN201
    servers = []

    def start(*answers: bytes | None) -> tuple[CannedServer, Client]:
        server = CannedServer(list(answers))
        servers.append(server)
        return server, Client(f"http://127.0.0.1:{server.port}", "k3y", timeout=10)
    yield start
    for server in servers:
        server.listener.close()


def test_a_post_carries_its_headers_and_body_and_reads_a_sized_answer(serve):  # noqa: ANN001
    server, client = serve(b'HTTP/1.1 202 ACCEPTED\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"id": "x"}')
    assert client.request("POST", "/v1/applications", b'{"a": 1}', {"Idempotency-Key": "abc"}) == (202, b'{"id": "x"}')
    (sent,) = server.requests
    assert sent.startswith(b"POST /v1/applications HTTP/1.1\r\n")
    for header in (b"Authorization: Bearer k3y", b"Idempotency-Key: abc", b"Content-Length: 8",
                   b"Content-Type: application/json"):
        assert header in sent
    assert sent.endswith(b'\r\n\r\n{"a": 1}')


def test_answers_on_one_kept_alive_connection_chunked_and_sized(serve):  # noqa: ANN001
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n"
    sized = b"HTTP/1.1 404 NOT FOUND\r\ncontent-length: 2\r\n\r\nno"
    server, client = serve(chunked, sized)
    assert client.request("GET", "/one") == (200, b"abcdefg")
    assert client.request("GET", "/two") == (404, b"no")
    assert server.connections == 1


def test_connection_close_and_a_dropped_connection_mean_a_fresh_one(serve):  # noqa: ANN001
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\na"
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"
    server, client = serve(closing, ok, None, ok)
    assert client.request("GET", "/a") == (200, b"a")
    assert client.request("GET", "/b") == (200, b"b")  # on a new connection
    assert client.request("GET", "/c") == (200, b"b")  # dropped unanswered, then sent again on a new one
    assert server.connections == 3
    assert [r.split(b" ")[1] for r in server.requests] == [b"/a", b"/b", b"/c", b"/c"]


def test_a_body_without_a_length_runs_to_the_close(serve):  # noqa: ANN001
    _server, client = serve(b"HTTP/1.1 500 INTERNAL SERVER ERROR\r\n\r\nboom")
    assert client.request("GET", "/") == (500, b"boom")
    assert client.sock is None
