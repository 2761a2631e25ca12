"""The front offices' client library (``satupintu.client``) against a real gateway over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from satupintu.client import Client, Problem


class Served:
    """A WSGI app on 127.0.0.1, port 0 (the port it got is ``url``'s)."""

    def __init__(self, app):
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def gateway(app) -> Iterator[Served]:
    served = Served(app)
    yield served
    served.close()


@pytest.fixture
def api(gateway, make_key) -> Iterator[Client]:
    with Client(gateway.url, make_key("submit", "read"), backoff=0.01) as client:
        yield client


def test_submit_read_list_and_cancel(api, example):
    services = {s.id: s for s in api.services()}
    assert "business-startup" in services and services["business-startup"].steps
    app = api.submit(example["service"], example["data"], reference="LOKET-1")
    assert app.status == "in_progress" and app.reference == "LOKET-1"
    assert {r.step for r in app.requests} == {"company", "tax", "permit", "social"}
    assert api.application(app.id).id == app.id
    assert [a.id for a in api.applications()] == [app.id]
    assert api.cancel(app.id).id == app.id
    assert [e["type"] for e in api.history(app.id)][0] == "submitted"


def test_the_same_key_gives_the_same_application_and_another_body_is_a_problem(api, example):
    first = api.submit(example["service"], example["data"], idempotency_key="k-1")
    assert api.submit(example["service"], example["data"], idempotency_key="k-1").id == first.id
    with pytest.raises(Problem) as err:
        api.submit(example["service"], example["data"], reference="another", idempotency_key="k-1")
    assert err.value.status == 409


def test_an_invalid_bundle_raises_a_problem_naming_the_fields(api, example):
    data = json.loads(json.dumps(example["data"]))
    del data["applicant"]["nik"]
    with pytest.raises(Problem) as err:
        api.submit(example["service"], data)
    assert err.value.status == 422 and err.value.errors
    with pytest.raises(Problem) as err:
        api.application("app_" + "0" * 32)
    assert err.value.status == 404


def test_a_submission_is_retried_after_429_with_the_same_idempotency_key():
    seen = []

    @Request.application
    def busy(request):
        seen.append(request.headers.get("Idempotency-Key"))
        if len(seen) < 3:
            return Response(json.dumps({"title": "Too Many Requests", "status": 429}), status=429,
                            headers={"Retry-After": "0"}, content_type="application/problem+json")
        return Response(json.dumps({"id": "app_1", "service": "s", "status": "in_progress", "reference": None,
                                    "created_at": "t", "updated_at": "t", "requests": []}), status=202,
                        content_type="application/json")

    served = Served(busy)
    try:
        with Client(served.url, "key", backoff=0) as client:
            assert client.submit("s", {}).id == "app_1"
    finally:
        served.close()
    assert len(seen) == 3 and len(set(seen)) == 1 and seen[0]


def test_events_resume_with_last_event_id_after_a_dropped_connection():
    asked = []

    def events(environ, start_response):
        asked.append(environ.get("HTTP_LAST_EVENT_ID"))
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        if len(asked) == 1:
            yield b'id: 1\nevent: submitted\ndata: {"n": 1}\n\n'
            yield b'id: 2\nevent: status\ndata: {"n": 2}\n\n'
            raise ConnectionResetError("dropped")  # the server goes away mid-stream
        yield b'id: 3\nevent: status\ndata: {"n": 3}\n\nevent: end\ndata: {}\n\n'

    served = Served(events)
    try:
        with Client(served.url, "key", backoff=0) as client:
            got = [(e.id, e.data["n"]) for e in client.events("app_1")]
    finally:
        served.close()
    assert got == [(1, 1), (2, 2), (3, 3)]
    assert asked == [None, "2"]


def test_events_of_a_real_application_end_with_the_stream(api, example):
    app = api.submit(example["service"], example["data"])
    events = list(api.events(app.id, stream_seconds=1))
    assert events and events[0].type == "submitted" and events[0].id is not None


def test_the_client_imports_neither_flask_the_store_nor_pika():
    code = ("import sys, satupintu.client; bad = [m for m in ('flask', 'pika', 'sqlalchemy', 'gateway') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
