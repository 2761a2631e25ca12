"""Fixtures for the sandbox agencies: the real ``python -m sandbox`` process on free ports.

``sandbox`` starts the program once per test module and reads the ``SANDBOX ...`` lines;
``callback_receiver`` is a tiny real HTTP server standing in for the gateway's callback
endpoint. Every test starts from reset stats and start-up knobs.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

REPO = Path(__file__).resolve().parents[2]
AGENCIES = ("company-registry", "municipality", "tax-office", "social-security")
CALLBACK_SECRET = "test-callback-secret"
DECISION_DELAY = 0.4


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any) -> None:
        pass


class CallbackReceiver:
    """Records every POST it gets; answers with queued status codes, then 200."""

    def __init__(self) -> None:
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.statuses: list[int] = []
        self._server = make_server(
            "127.0.0.1", 0, self._app, threaded=True, request_handler=_Quiet
        )
        self.url = f"http://127.0.0.1:{self._server.server_port}/callbacks/municipality"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _app(self, environ: dict, start_response: Any):
        request = Request(environ)
        status = self.statuses.pop(0) if self.statuses else 200
        self.received.put(
            {
                "headers": dict(request.headers),
                "body": request.get_data(),
                "answered": status,
            }
        )
        return Response("{}", status=status, mimetype="application/json")(
            environ, start_response
        )

    def next(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.received.get(timeout=timeout)

    def drain(self) -> None:
        while not self.received.empty():
            self.received.get_nowait()


class SandboxProcess:
    """The running sandbox: base URLs per agency plus helpers for its control routes."""

    callback_secret = CALLBACK_SECRET
    decision_delay = DECISION_DELAY

    def __init__(self, process: subprocess.Popen, urls: dict[str, str]) -> None:
        self.process = process
        self.urls = urls

    def url(self, agency: str, path: str = "") -> str:
        return self.urls[agency] + path

    def knobs(self, agency: str, **knobs: Any) -> dict[str, Any]:
        answer = requests.post(
            self.url(agency, "/_sandbox/faults"), json=knobs, timeout=5
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def stats(self, agency: str) -> dict[str, Any]:
        return requests.get(self.url(agency, "/_sandbox/stats"), timeout=5).json()

    def last_requests(self, agency: str, limit: int = 5) -> list[dict[str, Any]]:
        return requests.get(
            self.url(agency, f"/_sandbox/requests?limit={limit}"), timeout=5
        ).json()

    def clean(self) -> None:
        for agency in AGENCIES:
            requests.delete(
                self.url(agency, "/_sandbox/faults"), timeout=5
            ).raise_for_status()
            requests.post(
                self.url(agency, "/_sandbox/reset"), timeout=5
            ).raise_for_status()


def start_sandbox(*extra: str) -> tuple[subprocess.Popen, dict[str, str]]:
    """Run ``python -m sandbox`` on free ports and wait for ``SANDBOX READY``."""
    command = [sys.executable, "-m", "sandbox"]
    for agency in AGENCIES:
        command += [f"--{agency}-port", "0"]
    # A file rather than a pipe, so a chatty stderr can never block the sandbox.
    errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [*command, *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    process.errors = errors  # type: ignore[attr-defined]  # see stderr_of()
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            process.wait(timeout=5)
            errors.seek(0)
            raise RuntimeError(f"sandbox exited early: {errors.read()}")
        parts = line.split()
        if parts == ["SANDBOX", "READY"]:
            return process, urls
        if len(parts) == 3 and parts[0] == "SANDBOX":
            urls[parts[1]] = parts[2]
    process.kill()
    raise RuntimeError("sandbox did not become ready in time")


def stderr_of(process: subprocess.Popen) -> str:
    """What a sandbox started by ``start_sandbox`` has written to stderr so far."""
    process.errors.seek(0)
    return process.errors.read()


def stop_sandbox(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.fixture(scope="module")
def callback_receiver():
    receiver = CallbackReceiver()
    receiver._thread.start()
    yield receiver
    receiver._server.shutdown()


@pytest.fixture(scope="module")
def sandbox(callback_receiver):
    process, urls = start_sandbox(
        "--callback-url",
        callback_receiver.url,
        "--callback-secret",
        CALLBACK_SECRET,
        "--decision-delay",
        str(DECISION_DELAY),
        "--faults",
        json.dumps({"company-registry": {"reject_if_contains": "REJECT"}}),
    )
    assert set(urls) == set(AGENCIES)
    yield SandboxProcess(process, urls)
    assert stop_sandbox(process) == 0


class Launcher:
    """Starts and stops extra sandbox processes for start-up and shutdown tests."""

    start = staticmethod(start_sandbox)
    stop = staticmethod(stop_sandbox)
    stderr = staticmethod(stderr_of)


@pytest.fixture
def launcher() -> type[Launcher]:
    return Launcher


@pytest.fixture(autouse=True)
def clean_sandbox(request, callback_receiver):
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox").clean()
    callback_receiver.statuses.clear()
    callback_receiver.drain()
    yield
