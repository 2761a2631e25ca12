"""The load: C client threads, each with one keep-alive HTTP connection, sharing N jobs.

``http.client`` rather than requests: at thousands of requests per second on two cores
the client's own CPU is part of the measurement, and requests costs several times more
per call.  Latency is measured around one request/response on an open connection.
"""

from __future__ import annotations

import http.client
import json
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
    """One keep-alive connection to the gateway; reconnects when the server closes it."""

    def __init__(self, base_url: str, api_key: str):
        host, port = base_url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
                response = self.conn.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                return response.status, data
            except (http.client.HTTPException, ConnectionError):
                # A keep-alive connection the server closed between requests: once more, fresh.
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("not reached")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


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
