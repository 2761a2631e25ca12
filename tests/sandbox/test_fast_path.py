"""The filing fast path answers what the Flask view answers, byte for byte.

Two agencies start alike (same reference draws, same clock): one is served as the sandbox
serves it, the other with its filing routes left to Flask. The same calls go to both, in
the same order, and every answer must be identical: status line, headers in order, body.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder

from sandbox import company_registry, municipality
from sandbox.agency import Agency
from sandbox.agency_server import AgencyServer
from sandbox.front_desk import FrontDesk
from sandbox.rest import FAST_PATH_KEY

NOW = "2024-05-01T09:30:00+00:00"
COMPANY = {"company_name": "PT Maju Bersama", "owner_nik": "3171012345670123"}


class NoScheduler:
    """Keeps the municipality's decisions from running: only the answers are compared."""

    def later(self, delay: float, job: Callable[[], None]) -> None:
        pass


def make_app(agency_id: str, agency: Agency):
    if agency_id == "municipality":
        return municipality.create_app(agency, NoScheduler())
    return company_registry.create_app(agency)


def twins(agency_id: str, knobs: dict[str, Any] | None = None) -> tuple[Any, Any, list]:
    """(served with the fast path, served by Flask alone, the calls Flask got from the
    fast path's side)."""
    desks, passed_on = [], []
    for fast in (True, False):
        agency = Agency(agency_id, "rest", knobs)
        agency._random.seed(7)
        app = make_app(agency_id, agency)
        fast_path = app.extensions[FAST_PATH_KEY]
        if fast:
            flask_wsgi = fast_path.flask_wsgi

            def counted(environ, start_response, flask_wsgi=flask_wsgi):
                passed_on.append(environ["PATH_INFO"])
                return flask_wsgi(environ, start_response)

            fast_path.flask_wsgi = counted
        else:
            fast_path.routes.clear()  # every call goes to Flask
        desks.append(FrontDesk(agency, app))
    return desks[0], desks[1], passed_on


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch):
    monkeypatch.setattr(company_registry, "now_iso", lambda: NOW)
    monkeypatch.setattr(municipality, "now_iso", lambda: NOW)


def call(app, method: str, path: str, body: bytes = b"", **headers: str):
    """(status line, headers as given to start_response, body) of one WSGI call."""
    environ = EnvironBuilder(
        path=path, method=method, data=body, headers=headers
    ).get_environ()
    seen: list = []
    chunks = app(environ, lambda status, header_list, exc_info=None: seen.append(
        (status, list(header_list))
    ))
    data = b"".join(chunks)
    if hasattr(chunks, "close"):
        chunks.close()
    [(status, header_list)] = seen
    return status, header_list, data


def filing_calls(path: str) -> Iterator[tuple[bytes, dict[str, str]]]:
    """(body, headers) of the filing calls compared: answered, replayed, rejected and
    refused in each way there is."""
    good = json.dumps(COMPANY).encode()
    yield good, {"Idempotency-Key": "k-1"}
    yield good, {"Idempotency-Key": "k-1"}  # replayed
    yield good, {"Idempotency-Key": "  k-2 "}
    yield json.dumps({**COMPANY, "company_name": "PT REJECT"}).encode(), {"Idempotency-Key": "k-3"}
    yield json.dumps({"company_name": "é €", "nested": [1, {"b": None}]}).encode("utf-16"), {
        "Idempotency-Key": "k-4"
    }
    yield good, {}
    yield good, {"Idempotency-Key": "   "}
    yield b"{not json", {"Idempotency-Key": "k-5"}
    yield b"[1, 2]", {"Idempotency-Key": "k-6"}
    yield b"", {"Idempotency-Key": "k-7"}
    yield json.dumps({"company_name": ""}).encode(), {"Idempotency-Key": "k-8"}
    yield json.dumps({"company_name": 5}).encode(), {"Idempotency-Key": "k-9"}


ROUTES = [("company-registry", "/companies"), ("municipality", "/permits")]
CALLBACK = {"callback_url": "http://127.0.0.1:9/callbacks", "callback_secret": "s"}


@pytest.mark.parametrize(
    "agency_id, path, knobs",
    [(*route, {}) for route in ROUTES] + [("municipality", "/permits", CALLBACK)],
    ids=["registry", "municipality-deciding-at-once", "municipality-with-callback"],
)
def test_filing_answers_are_the_flask_views_answers(agency_id, path, knobs):
    fast, plain, passed_on = twins(agency_id, knobs)
    for body, headers in filing_calls(path):
        assert call(fast, "POST", path, body, **headers) == call(
            plain, "POST", path, body, **headers
        ), (body, headers)
    assert passed_on == []  # the fast path answered every one
    assert fast.agency.stats() == plain.agency.stats()
    assert fast.agency.recent_requests(50) == plain.agency.recent_requests(50)


@pytest.mark.parametrize("agency_id, path", ROUTES)
def test_injected_failure_and_its_retry_answer_as_flask_did(agency_id, path):
    fast, plain, passed_on = twins(agency_id, {"failure_rate": 1.0})
    body = json.dumps(COMPANY).encode()
    failed = call(fast, "POST", path, body, **{"Idempotency-Key": "k-1"})
    assert failed[0] == "503 SERVICE UNAVAILABLE"
    assert failed == call(plain, "POST", path, body, **{"Idempotency-Key": "k-1"})
    for desk in (fast, plain):
        desk.agency.knobs.update({"failure_rate": 0})
    retried = call(fast, "POST", path, body, **{"Idempotency-Key": "k-1"})
    assert retried[0] in ("201 CREATED", "202 ACCEPTED", "200 OK")
    assert retried == call(plain, "POST", path, body, **{"Idempotency-Key": "k-1"})
    assert passed_on == []
    assert fast.agency.stats() == plain.agency.stats()


@pytest.mark.parametrize(
    "method, path",
    [("GET", "/companies"), ("POST", "/companies/"), ("PUT", "/companies"), ("POST", "/nope")],
)
def test_other_calls_are_left_to_flask(method, path):
    fast, plain, passed_on = twins("company-registry")
    body = json.dumps(COMPANY).encode()
    answer = call(fast, method, path, body, **{"Idempotency-Key": "k-1"})
    assert answer == call(plain, method, path, body, **{"Idempotency-Key": "k-1"})
    assert passed_on == [path]


def test_a_debug_app_pretty_prints_through_flask():
    fast, plain, passed_on = twins("company-registry")
    for desk in (fast, plain):
        desk.app.debug = True
    body = json.dumps(COMPANY).encode()
    answer = call(fast, "POST", "/companies", body, **{"Idempotency-Key": "k-1"})
    assert b"\n  " in answer[2]
    assert answer == call(plain, "POST", "/companies", body, **{"Idempotency-Key": "k-1"})
    assert passed_on == ["/companies"]


def test_without_its_front_desk_the_app_answers_through_flask():
    fast, plain, passed_on = twins("company-registry")
    body = json.dumps(COMPANY).encode()
    answer = call(fast.app, "POST", "/companies", body, **{"Idempotency-Key": "k-1"})
    assert answer == call(plain.app, "POST", "/companies", body, **{"Idempotency-Key": "k-1"})
    assert answer[0] == "201 CREATED"
    assert passed_on == ["/companies"]


def wire_answers(app, requests: list[bytes]) -> list[bytes]:
    """The raw bytes waitress sends back for each request, on one kept-alive connection,
    with the Date header (the clock's) taken out."""
    server = AgencyServer("check", app, "127.0.0.1", 0, threads=2, connection_limit=10)
    port = server.start()
    answers = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            reader = sock.makefile("rb")
            for raw in requests:
                sock.sendall(raw)
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    head += reader.readline()
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                lines = [line for line in head.split(b"\r\n") if not line.startswith(b"Date: ")]
                answers.append(b"\r\n".join(lines) + reader.read(length))
            reader.close()
    finally:
        server.begin_stop()
        server.stop(0)
    return answers


def test_on_the_wire_the_answers_are_the_same_bytes():
    fast, plain, passed_on = twins("company-registry")
    body = json.dumps(COMPANY).encode()
    requests = [
        b"POST /companies HTTP/1.1\r\nHost: x\r\nIdempotency-Key: %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (key, len(payload), payload)
        for key, payload in [(b"k-1", body), (b"k-1", body), (b"", body), (b"k-2", b"[]")]
    ]
    assert wire_answers(fast, requests) == wire_answers(plain, requests)
    assert passed_on == []
