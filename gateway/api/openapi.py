"""GET /openapi.json: OpenAPI 3.1 of the whole HTTP API (DESIGN §3)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, json

from core.model import Catalog

from .. import __version__
from .context import ctx

bp = Blueprint("openapi", __name__)

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    405: {"Allow": {"schema": {"type": "string"}}},
    429: {"Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"},
                          "description": "seconds until the client's rate limit lets a request through"}},
}
_TITLES = {400: "malformed request", 401: "no valid API key (or signature)", 403: "the key lacks the scope",
           404: "not found, or not the caller's", 409: "conflict", 413: "the body is too large",
           415: "the body is not application/json", 422: "validation failed: errors name each field",
           429: "rate limited", 503: "not available"}


def _problems(*codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for code in codes:
        out[str(code)] = {"description": _TITLES.get(code, "problem"),
                          "content": {"application/problem+json": {"schema": _PROBLEM}}}
        if code in _HEADERS:
            out[str(code)]["headers"] = _HEADERS[code]
    return out


# Every endpoint that needs a key may also answer these.
_SECURED = (401, 403, 429)


def _html(description: str = "an HTML page") -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


# No text the gateway takes from a path, a query or a form may hold a NUL byte: every
# request with one is refused (400, ``problems.refuse_nul_bytes``) before a view sees it.
NO_NUL = "^[^\\x00]*$"


def _text(**schema: Any) -> dict[str, Any]:
    """A string parameter's schema: any text without a NUL byte."""
    return {"type": "string", "pattern": NO_NUL, **schema}


def _form(properties: dict[str, Any]) -> dict[str, Any]:
    return {"required": False, "content": {"application/x-www-form-urlencoded": {
        "schema": {"type": "object", "properties": properties,
                   "propertyNames": {"pattern": NO_NUL}, "additionalProperties": _text()}}}}


_REDIRECT = {"description": "to the login form (or the page asked for)",
             "headers": {"Location": {"schema": {"type": "string"}}}}


def _submission_schemas(catalog: Catalog) -> tuple[dict[str, Any], dict[str, Any]]:
    """``Submission`` as one branch per service whose ``data`` is the service's input schema."""
    components: dict[str, Any] = {}
    branches = []
    for service_id in sorted(catalog.services):
        name = "Data_" + "".join(ch if ch.isalnum() else "_" for ch in service_id)
        schema = {k: v for k, v in catalog.services[service_id].input_schema.items() if k not in ("$schema", "$id")}
        # Local references inside the input schema now live under components/schemas/<name>.
        text = json.dumps(schema).replace('"#/', f'"#/components/schemas/{name}/')
        components[name] = json.loads(text)
        branches.append({
            "type": "object", "required": ["service", "data"], "additionalProperties": False,
            "properties": {"service": {"const": service_id}, "data": {"$ref": f"#/components/schemas/{name}"},
                           "reference": _REFERENCE},
        })
    if not branches:
        branches = [{"type": "object", "required": ["service", "data"], "additionalProperties": False,
                     "properties": {"service": {"type": "string"}, "data": {"type": "object"},
                                    "reference": _REFERENCE}}]
    submission = branches[0] if len(branches) == 1 else {"oneOf": branches}
    return submission, components


_REFERENCE = {"type": "string", "maxLength": 200}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def spec(catalog: Catalog) -> dict[str, Any]:
    """The OpenAPI 3.1 document; ``Submission`` follows the catalog's input schemas."""
    submission, data_schemas = _submission_schemas(catalog)
    app_ref = {"$ref": "#/components/schemas/Application"}
    id_param = {"name": "app_id", "in": "path", "required": True, "schema": _text(maxLength=100)}
    limit_param = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}
    ops_limit = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}
    items = {"type": "object", "required": ["items"], "properties": {"items": {"type": "array"}}}
    secured = [{"bearer": []}]
    request_statuses = ["pending", "queued", "sent", "accepted", "approved", "rejected", "failed", "skipped",
                        "cancelled"]
    app_statuses = ["in_progress", "completed", "rejected", "failed", "cancelled"]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Satu Pintu", "version": __version__,
                 "description": "One door to many agencies: bundled applications split into agency requests."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Problem": {
                    "type": "object", "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "errors": {"type": "array", "items": {
                            "type": "object", "required": ["path", "message"],
                            "properties": {"path": {"type": "string"}, "message": {"type": "string"}}}},
                    },
                },
                "Request": {
                    "type": "object",
                    "required": ["step", "agency", "status", "agency_reference", "reason", "attempts", "updated_at"],
                    "properties": {
                        "step": {"type": "string"}, "agency": {"type": "string"}, "request_id": {"type": "string"},
                        "status": {"enum": request_statuses},
                        "agency_reference": {"type": ["string", "null"]}, "reason": {"type": ["string", "null"]},
                        "attempts": {"type": "integer", "minimum": 0}, "updated_at": {"type": "string"},
                    },
                },
                "Application": {
                    "type": "object",
                    "required": ["id", "service", "status", "reference", "created_at", "updated_at", "requests"],
                    "properties": {
                        "id": {"type": "string"}, "service": {"type": "string"}, "status": {"enum": app_statuses},
                        "reference": {"type": ["string", "null"]}, "created_at": {"type": "string"},
                        "updated_at": {"type": "string"}, "due_at": {"type": ["string", "null"]},
                        "overdue": {"type": "boolean"},
                        "requests": {"type": "array", "items": {"$ref": "#/components/schemas/Request"}},
                    },
                },
                "Submission": submission,
                **data_schemas,
                "Event": {
                    "type": "object", "required": ["id", "type", "occurred_at"],
                    "properties": {"id": {"type": "integer"}, "type": {"type": "string"},
                                   "step": {"type": ["string", "null"]}, "status": {"type": ["string", "null"]},
                                   "request_id": {"type": ["string", "null"]}, "cause": {"type": ["string", "null"]},
                                   "detail": {"type": "object"}, "occurred_at": {"type": "string"},
                                   "recorded_at": {"type": "string"}},
                },
            },
        },
        "paths": {
            "/v1/services": {"get": {
                "summary": "The catalog", "security": secured,
                "responses": {"200": _json(items), **_problems(*_SECURED)}}},
            "/v1/applications": {
                "post": {
                    "summary": "Submit a bundled application", "security": secured,
                    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                    "schema": {"type": "string", "minLength": 1, "maxLength": 200}}],
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Submission"}}}},
                    "responses": {"202": {**_json(app_ref, "Accepted"),
                                          "headers": {"Location": {"schema": {"type": "string"}}}},
                                  **_problems(400, 409, 413, 415, 422, *_SECURED)},
                },
                "get": {
                    "summary": "The caller's applications, newest first", "security": secured,
                    "parameters": [
                        {"name": "status", "in": "query", "schema": {"enum": app_statuses}},
                        {"name": "service", "in": "query",
                         "schema": {"enum": sorted(catalog.services)} if catalog.services else {"type": "string"}},
                        {"name": "cursor", "in": "query", "schema": _text()},
                        limit_param,
                    ],
                    "responses": {"200": _json({"type": "object", "required": ["items", "next_cursor"],
                                                "properties": {"items": {"type": "array", "items": app_ref},
                                                               "next_cursor": {"type": ["string", "null"]}}}),
                                  **_problems(400, *_SECURED)},
                },
            },
            "/v1/applications/{app_id}": {"get": {
                "summary": "One application", "security": secured, "parameters": [id_param],
                "responses": {"200": _json(app_ref), **_problems(404, *_SECURED)}}},
            "/v1/applications/{app_id}/history": {"get": {
                "summary": "The ordered events of the application (personal data masked)", "security": secured,
                "parameters": [id_param],
                "responses": {"200": _json({"type": "object", "required": ["application_id", "events"],
                                            "properties": {"application_id": {"type": "string"},
                                                           "events": {"type": "array", "items": {
                                                               "$ref": "#/components/schemas/Event"}}}}),
                              **_problems(404, *_SECURED)}}},
            "/v1/applications/{app_id}/events": {"get": {
                "summary": "Server-sent events of the application, live", "security": secured,
                "parameters": [id_param, {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                               {"name": "last_event_id", "in": "query", "schema": {"type": "integer"}},
                               {"name": "timeout", "in": "query", "description": "seconds the stream stays open",
                                "schema": {"type": "number", "minimum": 0, "maximum": 3600}}],
                "responses": {"200": {"description": "event stream",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                              **_problems(400, 404, *_SECURED)}}},
            "/v1/applications/{app_id}/cancel": {"post": {
                "summary": "Cancel what has not been decided", "security": secured, "parameters": [id_param],
                "responses": {"202": _json(app_ref, "Accepted"), **_problems(404, 409, *_SECURED)}}},
            "/v1/agencies/{agency}/callbacks": {"post": {
                "summary": "An agency's decision, signed with its secret (no API key)",
                "parameters": [{"name": "agency", "in": "path", "required": True, "schema": _text()},
                               {"name": "X-Satupintu-Signature", "in": "header", "required": True,
                                "description": "t=<unix>,v1=<hex hmac-sha256 of 't.body'>",
                                "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["request_id", "status"],
                    "properties": {"request_id": {"type": "string", "minLength": 1, "maxLength": 64},
                                   "status": {"enum": ["accepted", "approved", "rejected", "cancelled"]},
                                   "reference": {"type": "string", "maxLength": 200},
                                   "reason": {"type": "string", "maxLength": 2000}}}}}},
                "responses": {"202": _json({"type": "object"}, "Accepted"),
                              **_problems(400, 401, 404, 409, 413, 415, 422, 503)}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json({"type": "object"})}}},
            "/readyz": {"get": {"summary": "Readiness: store and broker reachable",
                                "responses": {"200": _json({"type": "object"}), "503": _json({"type": "object"})}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
                "description": "text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json({"type": "object"})}}},
            **_ops_paths(secured, id_param, ops_limit, items),
        },
    }


def _ops_paths(secured: list[dict[str, Any]], id_param: dict[str, Any], limit: dict[str, Any],
               items: dict[str, Any]) -> dict[str, Any]:
    """``/ops/`` (HTML, Bearer key or the login cookie) and ``/ops/api/...`` (JSON, ``ops`` scope)."""
    obj = _json({"type": "object"})
    page = {"200": _html(), "302": _REDIRECT, "403": _html("the key lacks the ops scope")}
    refused = {"description": "a cross-site request refused",
               "content": {"text/plain": {"schema": {"type": "string"}}, "text/html": {"schema": {"type": "string"}}}}
    paths: dict[str, Any] = {
        "/ops/api/overview": {"get": {"summary": "Totals, flow and health", "security": secured,
                                      "responses": {"200": obj, **_problems(*_SECURED)}}},
        "/ops/api/applications": {"get": {
            "summary": "Recent applications (personal data masked)", "security": secured,
            "parameters": [{"name": "status", "in": "query", "schema": _text()}, limit],
            "responses": {"200": _json(items), **_problems(400, *_SECURED)}}},
        "/ops/api/applications/{app_id}": {"get": {
            "summary": "One application with its timeline (personal data masked)", "security": secured,
            "parameters": [id_param], "responses": {"200": obj, **_problems(404, *_SECURED)}}},
        "/ops/api/agencies": {"get": {"summary": "Per-agency health", "security": secured,
                                      "responses": {"200": _json(items), **_problems(*_SECURED)}}},
        "/ops/api/queues": {"get": {"summary": "Queue depths", "security": secured,
                                    "responses": {"200": obj, **_problems(*_SECURED)}}},
        "/ops/api/dead-letters": {"get": {"summary": "Open dead letters", "security": secured,
                                          "parameters": [limit],
                                          "responses": {"200": _json(items), **_problems(400, *_SECURED)}}},
        "/ops/api/dead-letters/{dead_id}/replay": {"post": {
            "summary": "Replay one dead letter", "security": secured,
            "parameters": [{"name": "dead_id", "in": "path", "required": True,
                            "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}}],
            "responses": {"200": obj, **_problems(404, *_SECURED)}}},
        "/ops/api/search": {"get": {
            "summary": "Find applications by id, reference or NIK (matched by hash)", "security": secured,
            "parameters": [{"name": "q", "in": "query", "schema": _text(maxLength=200)}, limit],
            "responses": {"200": obj, **_problems(400, *_SECURED)}}},
        "/ops/": {"get": {"summary": "The operators' dashboard", "security": secured, "responses": page}},
        "/ops/applications": {"get": {"summary": "Dashboard: applications", "security": secured,
                                      "parameters": [{"name": "status", "in": "query", "schema": _text()}],
                                      "responses": page}},
        "/ops/applications/{app_id}": {"get": {"summary": "Dashboard: one application", "security": secured,
                                               "parameters": [id_param],
                                               "responses": {**page, "404": _html("not found")}}},
        "/ops/agencies": {"get": {"summary": "Dashboard: agencies", "security": secured, "responses": page}},
        "/ops/dead-letters": {"get": {"summary": "Dashboard: dead letters", "security": secured,
                                      "responses": page}},
        "/ops/search": {
            "get": {"summary": "Dashboard: search", "security": secured,
                    "parameters": [{"name": "q", "in": "query", "schema": _text()}],
                    "responses": page},
            "post": {"summary": "Dashboard: search (the form posts, so a NIK stays out of URLs)",
                     "security": secured, "requestBody": _form({"q": {"type": "string"}}),
                     "responses": {**page, "403": refused}}},
        "/ops/login": {
            "get": {"summary": "The login form",
                    "parameters": [{"name": "next", "in": "query", "schema": _text()}],
                    "responses": {"200": _html(), **_problems(400)}},
            "post": {"summary": "Sign in with an ops key: sets the HttpOnly session cookie (same origin only)",
                     "requestBody": _form({"key": _text(), "next": _text()}),
                     "responses": {"302": _REDIRECT, "401": _html("the key is not valid"),
                                   "403": _html("cross-site, or the key lacks the ops scope"),
                                   **_problems(400)}}},
        "/ops/logout": {"post": {"summary": "Sign out (same origin only)",
                                 "responses": {"302": _REDIRECT, "403": refused}}},
    }
    return paths


@bp.get("/openapi.json")
def openapi() -> Response:
    return Response(json.dumps(spec(ctx().catalog)), mimetype="application/json")
