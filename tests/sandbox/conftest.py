"""Fixtures for the sandbox agencies: the real ``python -m sandbox`` process on the ports it
reports (``support.start_sandbox``, the one way the tests start it).

``sandbox`` starts the program once per test module;
``callback_receiver`` is a tiny real HTTP server standing in for the gateway's callback
endpoint. Every test starts from reset stats and start-up knobs.
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Any

import pytest
from support import SANDBOX_AGENCIES, start_sandbox
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

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


@pytest.fixture(scope="module")
def callback_receiver():
    receiver = CallbackReceiver()
    receiver._thread.start()
    yield receiver
    receiver._server.shutdown()


@pytest.fixture(scope="module")
def sandbox(callback_receiver, tmp_path_factory):
    box = start_sandbox(
        tmp_path_factory.mktemp("sandbox") / "sandbox.log",
        callback_url=callback_receiver.url,
        callback_secret=CALLBACK_SECRET,
        decision_delay=DECISION_DELAY,
        faults=json.dumps({"company-registry": {"reject_if_contains": "REJECT"}}),
    )
    box.callback_secret = CALLBACK_SECRET
    box.decision_delay = DECISION_DELAY
    assert set(box.urls) == set(SANDBOX_AGENCIES)
    yield box
    assert box.stop() == 0


@pytest.fixture
def launcher(tmp_path):
    """Starts extra sandbox processes for start-up and shutdown tests (``launcher(*options)``);
    stops any still running afterwards."""
    started = []

    def launch(*options: str):
        box = start_sandbox(tmp_path / f"sandbox-{len(started)}.log", *options)
        started.append(box)
        return box
    yield launch
    for box in started:
        box.stop()


@pytest.fixture(autouse=True)
def clean_sandbox(request, callback_receiver):
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox").clean()
    callback_receiver.statuses.clear()
    callback_receiver.drain()
    yield
