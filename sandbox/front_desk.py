"""The WSGI middleware every agency sits behind.

It serves the ``/_sandbox/*`` control routes, records each agency request, and applies
the knobs that do not depend on the operation: latency, outage and authentication.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.wrappers import Request, Response

from . import auth
from .agency import Agency
from .knobs import KnobError

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
# Where read_body() leaves the body it read, so the app need not read it again.
BODY_KEY = "sandbox.body"


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(body), status=status, headers=headers, mimetype="application/json"
    )


def soap_fault(code: str, message: str, status: int = 500) -> Response:
    """A SOAP 1.1 Fault; ``code`` is ``Client``, ``Server`` or a dotted refinement of them."""
    text = (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f'<soap11env:Envelope xmlns:soap11env="{SOAP_ENV}"><soap11env:Body><soap11env:Fault>'
        f"<faultcode>soap11env:{code}</faultcode><faultstring>{message}</faultstring>"
        "</soap11env:Fault></soap11env:Body></soap11env:Envelope>"
    )
    return Response(
        text, status=status, mimetype="text/xml", content_type="text/xml; charset=utf-8"
    )


def unavailable(agency: Agency) -> Response:
    """The answer to a call hit by an outage or an injected transient failure."""
    if agency.protocol == "soap":
        return soap_fault("Server", "temporarily unavailable", status=503)
    return json_response(
        {"error": "temporarily unavailable", "agency": agency.id},
        503,
        {"Retry-After": "1"},
    )


def read_body(environ: dict[str, Any]) -> bytes:
    """Read the request body and put it back so the wrapped app can read it again."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ[BODY_KEY] = body
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    return body


class FrontDesk:
    """Wraps an agency's WSGI app with the control routes and the operation-agnostic knobs."""

    def __init__(
        self,
        agency: Agency,
        app: WSGIApp,
    ) -> None:
        self.agency = agency
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/_sandbox" or path.startswith("/_sandbox/"):
            return self.control(Request(environ))(environ, start_response)
        body = read_body(environ)
        agency = self.agency
        agency.record(environ, body)
        agency.call_started()
        try:
            return self.answer(environ, start_response, body)
        finally:
            agency.call_ended()

    def answer(
        self, environ: dict[str, Any], start_response: Callable, body: bytes
    ) -> Iterable[bytes]:
        knobs = self.agency.knobs
        latency = knobs.get("latency_ms")
        if latency:
            time.sleep(latency / 1000)
        if knobs.in_outage():
            return unavailable(self.agency)(environ, start_response)
        problem = auth.check(knobs.get("auth"), environ, body)
        if problem:
            return self.refuse(problem)(environ, start_response)
        return self.app(environ, start_response)

    def refuse(self, problem: str) -> Response:
        if self.agency.protocol == "soap":
            return soap_fault("Client", "authentication failed")
        return json_response({"error": "authentication failed", "detail": problem}, 401)

    def control(self, request: Request) -> Response:
        agency = self.agency
        route = (request.method, request.path.rstrip("/"))
        if route == ("GET", "/_sandbox/stats"):
            return json_response(agency.stats())
        if route == ("GET", "/_sandbox/requests"):
            limit = request.args.get("limit", 50, type=int)
            return json_response(agency.recent_requests(max(0, limit)))
        if route == ("GET", "/_sandbox/faults"):
            return json_response(agency.knobs.snapshot())
        if route == ("POST", "/_sandbox/faults"):
            try:
                agency.knobs.update(json.loads(request.get_data() or b"{}"))
            except (ValueError, KnobError) as exc:
                return json_response({"error": str(exc)}, 400)
            return json_response(agency.knobs.snapshot())
        if route == ("DELETE", "/_sandbox/faults"):
            agency.knobs.restore()
            return json_response(agency.knobs.snapshot())
        if route == ("POST", "/_sandbox/reset"):
            agency.reset()
            return json_response({"agency": agency.id, "reset": True})
        if route == ("GET", "/_sandbox/health"):
            return json_response({"agency": agency.id, "status": "ok"})
        return json_response(
            {
                "error": f"no such sandbox route: {request.method} {request.path}",
                "routes": [
                    "GET /_sandbox/stats",
                    "GET /_sandbox/requests?limit=50",
                    "GET|POST|DELETE /_sandbox/faults",
                    "POST /_sandbox/reset",
                    "GET /_sandbox/health",
                ],
            },
            404,
        )
