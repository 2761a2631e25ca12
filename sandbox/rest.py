"""Flask plumbing shared by the REST agencies: JSON errors, the filing call, lookups.

A filing call (``POST /companies``, ``POST /permits``) is the call the gateway makes most,
so a REST agency's app answers it without Flask (``FilingFastPath``): the same bytes
as the Flask view, which stays for everything else and for apps served without their
front desk.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from .agency import Agency
from .front_desk import BODY_KEY, unavailable

Answer = tuple[int, dict[str, Any]]
# What a filing call answers: status, JSON body and headers beyond Content-Type/-Length.
Reply = tuple[int, dict[str, Any], dict[str, str] | None]
REPLAYED = {"Idempotent-Replayed": "true"}
FAST_PATH_KEY = "sandbox.filing_fast_path"  # in app.extensions


def rest_app(name: str) -> Flask:
    """A Flask app whose errors are JSON, like a real agency API's, with the filing fast
    path in front of it (``filing_route`` adds routes to both)."""
    app = Flask(name)

    @app.errorhandler(HTTPException)
    def _json_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify({"error": exc.description or exc.name}), exc.code or 500

    fast_path = FilingFastPath(app, app.wsgi_app)
    app.extensions[FAST_PATH_KEY] = fast_path
    app.wsgi_app = fast_path  # type: ignore[method-assign]  # Flask's middleware hook
    return app


def pretty_json(app: Flask) -> bool:
    """Whether ``jsonify`` pretty-prints in ``app`` (in debug mode, unless told not to)."""
    provider = app.json
    return provider.compact is False or (provider.compact is None and app.debug)


def compact_json(app: Flask, body: Any) -> str:
    """The text ``jsonify(body)`` answers with when it does not pretty-print.

    jsonify goes through the app's JSON provider for every call; on the filing route
    that showed in profiles. The text is what the provider makes of it when compact: key
    order sorted, no spaces, a closing newline.
    """
    return app.json.dumps(body, separators=(",", ":")) + "\n"


def json_answer(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """``jsonify(body), status, headers`` in one step: the same bytes, for less CPU."""
    app: Flask = current_app  # type: ignore[assignment]  # the proxy
    if pretty_json(app):
        response = jsonify(body)
        response.status = status  # type: ignore[assignment]
        if headers:
            response.headers.update(headers)
        return response
    return Response(
        compact_json(app, body), status=status, headers=headers, mimetype="application/json"
    )


def json_object(body: bytes) -> dict[str, Any] | None:
    """``body`` as a JSON object, or None if it is not one (as ``get_json(force=True,
    silent=True)`` reads it: UTF-8, -16 or -32)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def json_body() -> dict[str, Any] | None:
    """The request body as a JSON object, or None if it is not one.

    The front desk has already read the body (``BODY_KEY``); parsing that directly spares
    werkzeug's stream wrappers.
    """
    body = request.environ.get(BODY_KEY)
    if body is None:  # the app served without its front desk
        body = request.get_data()
    return json_object(body)


@dataclass(frozen=True)
class FilingRoute:
    """One agency's filing call: validate, then replay, fail (injected) or process once."""

    agency: Agency
    operation: str
    required: tuple[str, ...]
    process: Callable[[str, dict], Answer]

    def reply(self, idempotency_key: str, payload: dict[str, Any] | None) -> Reply | None:
        """The answer to a filing with this key and body; None for an injected failure."""
        request_id = idempotency_key.strip()
        if not request_id:
            return 400, {"error": "Idempotency-Key header is required"}, None
        if payload is None:
            return 400, {"error": "body must be a JSON object"}, None
        missing = [
            f for f in self.required if not isinstance(payload.get(f), str) or not payload[f]
        ]
        if missing:
            return 400, {"error": f"missing or empty: {', '.join(missing)}"}, None
        filing = self.agency.ledger.file(
            request_id,
            self.operation,
            self.agency.knobs.get("failure_rate"),
            lambda: self.process(request_id, payload),
        )
        if filing.failed:
            return None
        status, body = filing.answer
        return status, body, REPLAYED if filing.duplicate else None

    def view(self) -> Response:
        """The Flask view: the filing answered through Flask's request and response."""
        reply = self.reply(request.headers.get("Idempotency-Key", ""), json_body())
        if reply is None:
            return unavailable(self.agency)
        status, body, headers = reply
        return json_answer(body, status, headers)


def filing_route(app: Flask, rule: str, endpoint: str, route: FilingRoute) -> None:
    """Serve ``POST rule`` as ``route``: a Flask view, answered by the fast path first."""
    app.add_url_rule(rule, endpoint, route.view, methods=["POST"])
    app.extensions[FAST_PATH_KEY].routes[rule] = route


class FilingFastPath:
    """WSGI middleware in front of a REST agency's Flask app for its filing routes.

    Each filing call through Flask built a request context, matched the URL map, made a
    werkzeug Response and ran Flask's signals and hooks, about a third of the sandbox's
    CPU per call under load. Here a ``POST`` to a filing rule, read by the front desk
    (``BODY_KEY``), is answered directly with what the Flask view answers: status line,
    headers and body alike (tests/sandbox/test_fast_path.py compares them). Anything else,
    including a body nobody read yet or a debug app's pretty-printed JSON, goes to Flask.
    """

    def __init__(self, app: Flask, flask_wsgi: Callable) -> None:
        self.app = app
        self.flask_wsgi = flask_wsgi  # Flask's own app.wsgi_app
        self.routes: dict[str, FilingRoute] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        route = self.routes.get(environ.get("PATH_INFO", ""))
        body = environ.get(BODY_KEY)
        if (
            route is None
            or body is None
            or environ.get("REQUEST_METHOD") != "POST"
            or pretty_json(self.app)
        ):
            return self.flask_wsgi(environ, start_response)
        reply = route.reply(environ.get("HTTP_IDEMPOTENCY_KEY", ""), json_object(body))
        if reply is None:
            return unavailable(route.agency)(environ, start_response)
        status, answer, headers = reply
        data = compact_json(self.app, answer).encode()
        # In the order werkzeug's Response lists them (waitress sorts them on the wire).
        response_headers = list(headers.items()) if headers else []
        response_headers += (
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
        )
        start_response(f"{status} {HTTP_STATUS_CODES[status].upper()}", response_headers)
        return [data]


def lookup(agency: Agency, operation: str, current: Callable[[Answer], dict[str, Any]]):
    """``GET ...?request_id=<id>``: did the filing with this idempotency key go through?"""
    agency.ledger.count(operation)
    request_id = request.args.get("request_id", "").strip()
    if not request_id:
        return jsonify({"error": "request_id query parameter is required"}), 400
    answer = agency.ledger.answer_for(request_id)
    if answer is None:
        return jsonify(
            {"error": "no filing with this request_id", "request_id": request_id}
        ), 404
    return jsonify(current(answer)), 200
