"""The gateway's gunicorn worker (``gateway/serving.py``): a thread answers a kept-alive
connection's next requests itself, and still lets every other connection in."""

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway import serving
from gateway.supervisor import free_port, wait_http

REPO = Path(__file__).resolve().parents[2]

APP = '''
import os, threading

def app(environ, start_response):
    body = f"{os.getpid()} {threading.get_ident()} {environ['PATH_INFO']}".encode()
    if environ["REQUEST_METHOD"] == "POST":
        body += b" " + environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    if environ["PATH_INFO"] == "/stream":  # no length; its second event waits for a file
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return _stream(environ["QUERY_STRING"])
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

def _stream(go):
    yield b"data: first\\n\\n"
    while not os.path.exists(go):
        threading.Event().wait(0.01)
    yield b"data: second\\n\\n"
'''


@pytest.fixture
def server(tmp_path):
    """gunicorn with ``KeepingThreadWorker``: one process, one thread (so fairness shows)."""
    (tmp_path / "tinyapp.py").write_text(APP)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), SATUPINTU_KEEPALIVE_HOLD_MS="1000")
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115 -- closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--chdir", str(tmp_path), "-k", "gateway.serving.KeepingThreadWorker",
         "-w", "1", "--threads", "1", "-b", f"127.0.0.1:{port}", "--keep-alive", "30",
         "--no-control-socket", "tinyapp:app"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_http(f"http://127.0.0.1:{port}/up", 30, alive=lambda: process.poll() is None), \
            (tmp_path / "gunicorn.log").read_text()
        yield port, tmp_path / "gunicorn.log"
    finally:
        os.killpg(process.pid, signal.SIGQUIT)
        process.wait(15)
        log.close()


def test_the_gateway_runs_the_keeping_worker():
    assert serving.worker_class() == "gateway.serving.KeepingThreadWorker"


def test_hold_comes_from_the_environment():
    assert serving.hold_seconds({}) == serving.DEFAULT_HOLD_MS / 1000
    assert serving.hold_seconds({"SATUPINTU_KEEPALIVE_HOLD_MS": "0"}) == 0
    assert serving.hold_seconds({"SATUPINTU_KEEPALIVE_HOLD_MS": "7.5"}) == 0.0075
    assert serving.hold_seconds({"SATUPINTU_KEEPALIVE_HOLD_MS": "soon"}) == serving.DEFAULT_HOLD_MS / 1000


def test_requests_on_one_connection_are_answered_in_turn(server):
    port, log = server
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    answers = []
    for i in range(50):
        if i % 2:
            connection.request("POST", f"/n/{i}", body=f"body-{i}".encode())
        else:
            connection.request("GET", f"/n/{i}")
        response = connection.getresponse()
        assert response.status == 200
        answers.append(response.read().decode())
    connection.close()
    assert [a.split(" ")[2] for a in answers] == [f"/n/{i}" for i in range(50)]
    assert all(a.endswith(f"body-{i}") for i, a in enumerate(answers) if i % 2)
    assert "KeepingThreadWorker" in log.read_text()


def test_a_busy_connection_does_not_keep_the_only_thread_from_another(server):
    port, _ = server
    other_answered = threading.Event()
    busy_sent, busy_gave_up = [], []

    def busy() -> None:  # back to back, on one connection, until the other is answered
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        deadline = time.monotonic() + 15
        while not other_answered.is_set():
            if time.monotonic() > deadline:
                busy_gave_up.append(1)  # the other one was kept waiting all along
                break
            connection.request("GET", "/busy")
            connection.getresponse().read()
            busy_sent.append(1)
        connection.close()

    thread = threading.Thread(target=busy)
    thread.start()
    while len(busy_sent) < 20:  # the only thread is serving the busy connection by now
        time.sleep(0.01)
    other = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    other.request("GET", "/other")
    response = other.getresponse()
    answer = response.read().decode()
    other_answered.set()
    thread.join(30)
    other.close()
    assert response.status == 200 and answer.endswith("/other")
    assert not busy_gave_up  # answered while the busy connection kept sending


def test_a_client_that_closes_is_let_go(server):
    port, _ = server
    for _ in range(5):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/once")
        assert connection.getresponse().read().endswith(b"/once")
        connection.close()  # the holding thread sees EOF and gives the connection up
    fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    fresh.request("GET", "/after")
    assert fresh.getresponse().read().endswith(b"/after")
    fresh.close()


class RecordingSocket:
    def __init__(self):
        self.sent = []
        self.closed = False

    def sendall(self, data):
        self.sent.append(bytes(data))

    def close(self):
        self.closed = True


SIZED_HEAD = b"HTTP/1.1 201 CREATED\r\nServer: x\r\nContent-Length: 2\r\n\r\n"
STREAM_HEAD = b"HTTP/1.1 200 OK\r\nServer: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_a_sized_answer_leaves_in_one_send():
    sock = RecordingSocket()
    held = serving.HeadHeldSocket(sock)
    held.sendall(SIZED_HEAD)
    assert sock.sent == []
    held.sendall(b"{}")
    held.flush()
    assert sock.sent == [SIZED_HEAD + b"{}"]


def test_a_streamed_answer_sends_its_head_at_once_and_each_chunk_as_written():
    sock = RecordingSocket()
    held = serving.HeadHeldSocket(sock)
    held.sendall(STREAM_HEAD)
    assert sock.sent == [STREAM_HEAD]
    held.sendall(b"5\r\nfirst\r\n")
    held.sendall(b"0\r\n\r\n")
    assert sock.sent == [STREAM_HEAD, b"5\r\nfirst\r\n", b"0\r\n\r\n"]


def test_a_held_head_goes_out_before_anything_else_is_done_with_the_socket():
    sock = RecordingSocket()
    held = serving.HeadHeldSocket(sock)
    held.sendall(SIZED_HEAD)
    held.close()  # e.g. gunicorn closing after a failure, or sendfile
    assert sock.sent == [SIZED_HEAD] and sock.closed
    held.flush()
    assert sock.sent == [SIZED_HEAD]  # sent once


def test_a_bodiless_answer_gets_its_head_when_the_request_is_done(server):
    port, _ = server
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("HEAD", "/n/1")
    response = connection.getresponse()
    assert response.status == 200 and int(response.headers["Content-Length"]) > 0
    assert response.read() == b""
    connection.request("GET", "/n/2")  # the same connection goes on
    assert connection.getresponse().read().endswith(b"/n/2")
    connection.close()


def test_a_streamed_answer_is_sent_as_it_is_written(server, tmp_path):
    port, _ = server
    go = tmp_path / "go"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", f"/stream?{go}")
    response = connection.getresponse()
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.read1() == b"data: first\n\n"  # times out if it waited for the rest
    go.touch()
    assert response.read() == b"data: second\n\n"
    connection.close()


def test_spread_comes_from_the_environment():
    assert serving.spread_seconds({}) == serving.DEFAULT_SPREAD_MS / 1000
    assert serving.spread_seconds({"SATUPINTU_ACCEPT_SPREAD_MS": "0"}) == 0
    assert serving.spread_seconds({"SATUPINTU_ACCEPT_SPREAD_MS": "-3"}) == 0
    assert serving.spread_seconds({"SATUPINTU_ACCEPT_SPREAD_MS": "x"}) == serving.DEFAULT_SPREAD_MS / 1000


def _gunicorn(tmp_path, *, workers: int, threads: int, spread_ms: str):  # noqa: ANN001, ANN202
    (tmp_path / "tinyapp.py").write_text(APP)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), SATUPINTU_ACCEPT_SPREAD_MS=spread_ms)
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115 -- closed by the caller
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--chdir", str(tmp_path), "-k", "gateway.serving.KeepingThreadWorker",
         "-w", str(workers), "--threads", str(threads), "-b", f"127.0.0.1:{port}", "--keep-alive", "30",
         "--no-control-socket", "tinyapp:app"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return port, process, log


def _pids_of_connections(port: int, count: int) -> list[str]:
    """Open ``count`` kept-alive connections one after another; the worker pid answering each."""
    pids, connections = [], []
    for i in range(count):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", f"/c/{i}")
        response = connection.getresponse()
        assert response.status == 200
        pids.append(response.read().decode().split(" ")[0])
        connections.append(connection)  # stays open: the process keeps counting it
    for connection in connections:
        connection.close()
    return pids


@pytest.mark.parametrize("workers", [2, 3])
def test_connections_spread_over_the_processes_once_one_has_a_connection_per_thread(tmp_path, workers):  # noqa: ANN001
    # A long pause, so that on a busy machine a sibling surely wakes within it.
    port, process, log = _gunicorn(tmp_path, workers=workers, threads=2, spread_ms="2000")
    try:
        assert wait_http(f"http://127.0.0.1:{port}/up", 30, alive=lambda: process.poll() is None), \
            (tmp_path / "gunicorn.log").read_text()
        time.sleep(0.5)  # the /up probe's connection is closed and counted off
        pids = _pids_of_connections(port, 2 * workers)
        # Each process takes two: once one has a connection per thread, the others take the next.
        assert sorted(pids.count(pid) for pid in set(pids)) == [2] * workers, pids
        # A full house still lets everybody in: the next connection waits out the pause, then is taken.
        more = _pids_of_connections(port, 2 * workers + 1)
        assert len(more) == 2 * workers + 1
    finally:
        os.killpg(process.pid, signal.SIGQUIT)
        process.wait(15)
        log.close()
