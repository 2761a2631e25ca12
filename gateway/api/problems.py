"""RFC 9457 problem details: every error the API returns, and the handlers that make them."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException

from core.domain.errors import Conflict, NotFound, ValidationFailed

log = logging.getLogger("satupintu.api")

PROBLEM = "application/problem+json"
TYPES = "https://satupintu.dev/problems/"


class Problem(Exception):
    """Raised inside a view to answer with a problem document."""

    def __init__(self, status: int, title: str, detail: str, *, type: str = "about:blank",
                 errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.title, self.detail, self.type = status, title, detail, type
        self.errors, self.headers = errors, headers or {}


def problem_response(status: int, title: str, detail: str, *, type: str = "about:blank",
                     errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"type": type, "title": title, "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def refuse_nul_bytes() -> Response | None:
    """400 for a NUL byte in the path, the query or a form: no store keeps one (PostgreSQL
    refuses them in text), so they are turned away before any view sees them."""
    req = request
    values = [req.path]
    # Only a NUL byte or its escape in the raw query string can put one in ``args``: parsing
    # them (every request, for nothing) is left to the requests that carry one.
    query = req.query_string
    if b"\x00" in query or b"%00" in query:
        values += [*req.args.keys(), *req.args.values()]
    if req.mimetype in _FORMS and req.endpoint != "documents.upload":  # uploads stream: the view checks them
        values += [*req.form.keys(), *req.form.values()]
    if any("\x00" in v for v in values):
        return problem_response(400, "Bad Request", "NUL bytes are not allowed in paths, queries or forms",
                                type=TYPES + "malformed")
    return None


def install(app: Flask) -> None:
    app.before_request(refuse_nul_bytes)

    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        return problem_response(exc.status, exc.title, exc.detail, type=exc.type, errors=exc.errors,
                                headers=exc.headers)

    @app.errorhandler(ValidationFailed)
    def _invalid(exc: ValidationFailed) -> Response:
        return problem_response(422, "Validation failed", "the request does not match the schema",
                                type=TYPES + "validation", errors=exc.errors)

    @app.errorhandler(NotFound)
    def _not_found(exc: NotFound) -> Response:
        return problem_response(404, "Not found", str(exc), type=TYPES + "not-found")

    @app.errorhandler(Conflict)
    def _conflict(exc: Conflict) -> Response:
        return problem_response(409, "Conflict", str(exc), type=TYPES + "conflict")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        response = problem_response(exc.code or 500, exc.name, exc.description or exc.name)
        for key, value in exc.get_headers():
            if key.lower() != "content-type":
                response.headers[key] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return problem_response(500, "Internal Server Error",
                                "the gateway failed to handle this request; nothing was stored")
