"""The load: C client threads, each with one keep-alive HTTP connection, sharing N jobs.

At thousands of requests per second on two cores the client's own CPU is part of the
measurement, so the client is as lean as Python allows (``Client``: a bare socket, not
requests or ``http.client``).  Latency is measured around one request/response on an
open connection.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


@dataclass
class LoadResult:
    started: float  # wall clock (time.time) of the first request
    finished: float
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.ok / max(self.finished - self.started, 1e-9)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.ok, "errors": len(self.errors), "per_second": round(self.rate, 1),
            "p50_ms": round(percentile(self.latencies, 50) * 1000, 2),
            "p99_ms": round(percentile(self.latencies, 99) * 1000, 2),
            "first_error": self.errors[0] if self.errors else None,
        }


class Client:
    """One keep-alive connection to the gateway, spoken to on a bare socket.

    ``http.client`` cost the client ~0.2 ms of CPU per request; at thousands of requests
    a second on two cores that is a good part of a core taken from the server being
    measured (FIELD-NOTES' ceiling was measured with ``wrk``, a C client).  Requests are
    written in one ``sendall`` and answers read with a minimal HTTP/1.1 parser: the status
    line, ``Content-Length`` or chunked bodies, and ``Connection: close``.  Reconnects once
    when the server closed the connection between requests.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 60):
        host, port = base_url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.timeout = timeout
        self.fixed = (f"Host: {host}:{port}\r\nAuthorization: Bearer {api_key}\r\n"
                      "Content-Type: application/json\r\n").encode()
        self.sock: socket.socket | None = None
        self.buffer = b""

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        length = f"Content-Length: {len(body)}\r\n" if body is not None else ""
        message = f"{method} {path} HTTP/1.1\r\n".encode() + self.fixed + (extra + length + "\r\n").encode()
        if body:
            message += body
        for attempt in (1, 2):
            fresh = self.sock is None
            if fresh:
                self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.buffer = b""
            try:
                self.sock.sendall(message)
                status, close, data = self._response()
            except (ConnectionError, EOFError):
                # A kept-alive connection the server had closed: once more, on a fresh one.
                self.close()
                if attempt == 2 or fresh:
                    raise
                continue
            if close:
                self.close()
            return status, data
        raise AssertionError("not reached")

    def _response(self) -> tuple[int, bool, bytes]:
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._fill()
        head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4:]
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, chunked, close = None, False, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "connection":
                close = value.strip().lower() == "close"
        if chunked:
            return status, close, self._chunks()
        if length is None:  # the body runs until the server closes the connection
            while True:
                try:
                    self._fill()
                except EOFError:
                    break
            data, self.buffer = self.buffer, b""
            return status, True, data
        return status, close, self._take(length)

    def _chunks(self) -> bytes:
        parts = []
        while True:
            while (end := self.buffer.find(b"\r\n")) < 0:
                self._fill()
            size = int(self.buffer[:end].split(b";")[0], 16)
            self.buffer = self.buffer[end + 2:]
            if size == 0:
                while (end := self.buffer.find(b"\r\n")) != 0:  # trailers, then the blank line
                    if end < 0:
                        self._fill()
                    else:
                        self.buffer = self.buffer[end + 2:]
                self.buffer = self.buffer[2:]
                return b"".join(parts)
            parts.append(self._take(size))
            self._take(2)

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buffer = b""


def drive(base_url: str, api_key: str, jobs: int, concurrency: int,
          job: Callable[[Client, int], tuple[bool, str]]) -> LoadResult:
    """Run ``job(client, i)`` for i in 0..jobs-1 on ``concurrency`` threads.

    ``job`` returns (ok, id-or-error); the latency of successful jobs is recorded.
    """
    next_index = iter(range(jobs))
    lock = threading.Lock()
    result = LoadResult(started=0.0, finished=0.0)
    start = threading.Barrier(concurrency + 1)

    def run() -> None:
        client = Client(base_url, api_key)
        start.wait()
        latencies, ids, errors = [], [], []
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            t0 = time.perf_counter()
            try:
                ok, value = job(client, i)
            except Exception as exc:  # noqa: BLE001 - a failed request is a data point
                ok, value = False, repr(exc)
            if ok:
                latencies.append(time.perf_counter() - t0)
                ids.append(value)
            else:
                errors.append(value)
        client.close()
        with lock:
            result.latencies.extend(latencies)
            result.ids.extend(ids)
            result.errors.extend(errors)

    threads = [threading.Thread(target=run, name=f"bench-client-{i}") for i in range(concurrency)]
    for thread in threads:
        thread.start()
    start.wait()
    result.started = time.time()
    for thread in threads:
        thread.join()
    result.finished = time.time()
    return result


def submitter(make_body: Callable[[int], dict[str, Any]]) -> Callable[[Client, int], tuple[bool, str]]:
    """A job that submits bundle ``i`` with a fresh Idempotency-Key; ok on 202."""
    def job(client: Client, i: int) -> tuple[bool, str]:
        status, data = client.request("POST", "/v1/applications", json.dumps(make_body(i)).encode(),
                                      {"Idempotency-Key": uuid.uuid4().hex})
        if status != 202:
            return False, f"{status} {data[:200]!r}"
        return True, json.loads(data)["id"]
    return job


def reader(ids: list[str]) -> Callable[[Client, int], tuple[bool, str]]:
    """A job that reads application ``ids[i % len(ids)]``; ok on 200."""
    def job(client: Client, i: int) -> tuple[bool, str]:
        app_id = ids[i % len(ids)]
        status, data = client.request("GET", f"/v1/applications/{app_id}")
        if status != 200:
            return False, f"{status} {data[:200]!r}"
        return True, app_id
    return job
