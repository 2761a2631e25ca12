"""Fixtures for the adapter tests: tiny in-test HTTP(S) agencies on free ports, agency
configs, and a throw-away certificate authority for mTLS."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import Sandbox, start_sandbox
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from adapters.base import AgencyRequest
from core.model import Agency


@dataclass
class Seen:
    """One request a fake agency received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    raw_uri: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[Request], Response]


@dataclass
class FakeAgency:
    """A WSGI app answering per ``(method, path)`` with canned or computed responses."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def route(self, method: str, path: str, status: int = 200, json_body: Any = None, *,
              body: bytes | str | None = None, headers: dict[str, str] | None = None,
              delay: float = 0.0) -> None:
        def handler(_request: Request) -> Response:
            if delay:
                time.sleep(delay)
            data = body if body is not None else (json.dumps(json_body) if json_body is not None else b"")
            return Response(data, status=status, headers=headers,
                            content_type="application/json" if json_body is not None else "text/plain")
        self.routes[(method, path)] = handler

    def handle(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        self.seen.append(Seen(request.method, request.path, request.query_string.decode(),
                              dict(request.headers), body, environ.get("REQUEST_URI") or environ.get("RAW_URI", "")))
        handler = self.routes.get((request.method, request.path))
        response = handler(request) if handler else Response("not found", status=404)
        return response(environ, start_response)

    @property
    def last(self) -> Seen:
        return self.seen[-1]


def _serve(app: Any, ssl_context: ssl.SSLContext | None = None) -> Iterator[tuple[str, Any]]:
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=ssl_context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_port}", server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake_agency() -> Iterator[FakeAgency]:
    agency = FakeAgency()
    for url, _server in _serve(agency):
        agency.url = url
        yield agency


@pytest.fixture
def make_agency() -> Callable[..., Agency]:
    def build(endpoint: str, operations: dict[str, Any], **kwargs: Any) -> Agency:
        kwargs.setdefault("connect_timeout", 2.0)
        kwargs.setdefault("read_timeout", 5.0)
        return Agency(id=kwargs.pop("id", "test-agency"), name="Test agency", adapter=kwargs.pop("adapter", "rest"),
                      endpoint=endpoint.rstrip("/"), file="test", operations=operations, **kwargs)
    return build


def agency_request(operation: str = "register", payload: dict[str, Any] | None = None, **kwargs: Any) -> AgencyRequest:
    return AgencyRequest(request_id=kwargs.pop("request_id", "req-0001"), application_id=kwargs.pop("application_id", "app-42"),
                         service="open-a-business", step=kwargs.pop("step", "register"), agency="test-agency",
                         operation=operation, payload=payload if payload is not None else {"name": "PT Maju"},
                         **kwargs)


@pytest.fixture
def request_factory() -> Callable[..., AgencyRequest]:
    return agency_request


@dataclass
class Pki:
    """A private CA with a server certificate for 127.0.0.1 and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_client_cert: Path
    other_client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=Satu Pintu Test CA", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def issue(name: str, ca: str, ext: str | None = None) -> None:
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        extra = ["-extfile", ext] if ext else []
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *extra, cwd=d)

    issue("server", "ca", "server.ext")
    issue("client", "ca")
    # A client certificate from a CA the server does not trust.
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.pem",
             "-days", "2", "-subj", "/CN=Rogue CA", cwd=d)
    issue("stranger", "rogue")
    return Pki(ca=d / "ca.pem", server_cert=d / "server.pem", server_key=d / "server.key",
               client_cert=d / "client.pem", client_key=d / "client.key",
               other_client_cert=d / "stranger.pem", other_client_key=d / "stranger.key")


@pytest.fixture
def mtls_agency(pki: Pki) -> Iterator[FakeAgency]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    agency = FakeAgency()
    for url, _server in _serve(agency, context):
        agency.url = url
        yield agency


@pytest.fixture(scope="session")
def sandbox_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The real sandbox agencies (``python -m sandbox``), once for the session."""
    box = start_sandbox(tmp_path_factory.mktemp("sandbox") / "sandbox.log")
    yield box
    box.stop()


@pytest.fixture
def sandbox(sandbox_process: Sandbox) -> Iterator[Sandbox]:
    sandbox_process.restore()
    yield sandbox_process
    sandbox_process.restore()
