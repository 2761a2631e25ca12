"""A handful of sockets must not stop the gateway (issue 26, finding 2): event streams are
capped per client and in all, and end; a client that sends its head slowly loses its thread.

Each test runs the real gateway (``satupintu serve``, gunicorn's gthread worker) on a socket
the test holds, with fewer threads than the streams and slow connections it opens.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
import requests
from support import Stack, wait_until

from core.settings import Settings
from gateway.api.events import StreamSlots

THREADS = 4  # one gateway process with 4 threads: at most 2 streams (half), 2 per client


@pytest.fixture
def start_gateway(env, engine, gateway_listener, tmp_path):
    """Start ``satupintu serve`` (1 process, ``THREADS`` threads, plus ``extra`` settings);
    its base URL once /healthz answers."""
    stacks = []

    def start(**extra: str) -> str:
        logs = tmp_path / f"logs-{len(stacks)}"
        logs.mkdir()
        stack = Stack(env=dict(os.environ, **env, SATUPINTU_WEB_WORKERS="1", SATUPINTU_WEB_THREADS=str(THREADS),
                               **extra), logs=logs, listener=gateway_listener)
        stacks.append(stack)
        stack.start("serve")

        def up() -> bool:
            if stack.procs["serve"].process.poll() is not None:
                pytest.fail(f"the gateway exited:\n{stack.tail()}")
            try:
                return requests.get(stack.url + "/healthz", timeout=2).ok
            except requests.RequestException:
                return False
        wait_until(up, 60, message="the gateway to answer")
        return stack.url

    yield start
    for stack in stacks:
        stack.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(url: str, key: str, example: dict) -> str:
    response = requests.post(f"{url}/v1/applications", json=example, headers=bearer(key), timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def open_stream(url: str, key: str, app_id: str, **params: str) -> requests.Response:
    """A stream whose head has arrived (still open), or the problem that refused it."""
    return requests.get(f"{url}/v1/applications/{app_id}/events", headers=bearer(key), params=params,
                        stream=True, timeout=30)


def assert_too_many_streams(response: requests.Response) -> None:
    assert response.status_code == 429, response.status_code
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.headers["Retry-After"].isdigit()
    assert response.json()["type"].endswith("/too-many-streams")


class SlowClient:
    """A connection that sends a request head one header line every 2 s (slowloris) and
    notes when the gateway closes it."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.started, self.closed = threading.Event(), threading.Event()
        threading.Thread(target=self.drip, daemon=True).start()

    def drip(self) -> None:
        try:
            self.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n")
            self.started.set()
            for _ in range(30):
                time.sleep(2)
                self.sock.settimeout(0.01)
                try:
                    if self.sock.recv(1024) == b"":
                        break
                except TimeoutError:
                    pass
                self.sock.settimeout(None)
                self.sock.sendall(b"X-Slow: 1\r\n")
            else:
                return  # 60 s and still open: never closed
        except OSError:
            pass
        self.closed.set()

    def close(self) -> None:
        self.sock.close()


def test_streams_and_slow_clients_beyond_the_threads_leave_healthz_and_submissions_answering(
        start_gateway, make_key, example):
    url = start_gateway()
    first, second = make_key("submit", "read"), make_key("submit", "read")
    first_app, second_app = submit(url, first, example), submit(url, second, example)
    streams, slow = [], []
    try:
        streams += [open_stream(url, first, first_app), open_stream(url, first, first_app)]
        assert [s.status_code for s in streams] == [200, 200]
        assert_too_many_streams(open_stream(url, first, first_app))  # a third from one client
        assert_too_many_streams(open_stream(url, second, second_app))  # the process has all it may
        slow = [SlowClient(url) for _ in range(THREADS + 2)]
        for client in slow:
            assert client.started.wait(30)
        # 2 streams and 6 slow heads against 4 threads: the gateway still answers.
        assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
        submit(url, second, example)
        wait_until(lambda: all(c.closed.is_set() for c in slow), 60,
                   message="the gateway to close every slow connection")
    finally:
        for response in streams:
            response.close()
        for client in slow:
            client.close()


def test_a_stream_ends_at_its_longest_and_the_client_resumes_with_last_event_id(
        start_gateway, make_key, example):
    url = start_gateway(SATUPINTU_EVENTS_MAX_SECONDS="1")
    key = make_key("submit", "read")
    app_id = submit(url, key, example)
    ended = threading.Event()
    statuses: list[int] = []
    seen: list[str] = []

    def read() -> None:
        # The application never finishes (no worker runs): only the gateway's bound ends it.
        with open_stream(url, key, app_id, timeout="3600") as response:
            statuses.append(response.status_code)
            seen.extend(line for line in response.iter_lines(decode_unicode=True) if line.startswith("id: "))
        ended.set()

    for _ in range(THREADS):  # more streams, one after another, than the cap: each gives its slot back
        ended.clear()
        threading.Thread(target=read, daemon=True).start()
        assert ended.wait(60), "the stream did not end"
    assert statuses == [200] * THREADS
    last = seen[0]
    assert seen.count(last) == THREADS  # each stream began at the beginning
    resumed = requests.get(f"{url}/v1/applications/{app_id}/events", params={"timeout": "0.5"},
                           headers={**bearer(key), "Last-Event-ID": last.removeprefix("id: ")}, timeout=30)
    assert resumed.status_code == 200
    assert last not in resumed.text


def test_streams_never_get_more_than_half_the_threads():
    assert StreamSlots.for_settings(Settings(web_threads=8, events_streams=100)).total == 4
    assert StreamSlots.for_settings(Settings(web_threads=8, events_streams=3)).total == 3
    slots = StreamSlots(total=2, per_client=1)
    give_back = slots.take("a")
    assert give_back is not None and slots.take("a") is None
    assert slots.take("b") is not None and slots.take("c") is None
    give_back()
    give_back()  # a second call gives nothing more back
    assert slots.take("c") is not None and slots.take("d") is None

