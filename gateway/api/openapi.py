"""GET /openapi.json: OpenAPI 3.1 of the whole HTTP API (DESIGN §3)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, json

from .. import __version__
from .context import ctx

bp = Blueprint("openapi", __name__)

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problems(*codes: int) -> dict[str, Any]:
    return {str(code): {"description": "problem", "content": {"application/problem+json": {"schema": _PROBLEM}}}
            for code in codes}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def spec(service_ids: list[str]) -> dict[str, Any]:
    app_ref = {"$ref": "#/components/schemas/Application"}
    id_param = {"name": "app_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 100}}
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
                "Submission": {
                    "type": "object", "required": ["service", "data"], "additionalProperties": False,
                    "properties": {
                        "service": {"enum": service_ids} if service_ids else {"type": "string"},
                        "data": {"type": "object"},
                        "reference": {"type": "string", "maxLength": 200},
                    },
                },
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
                "responses": {"200": _json({"type": "object", "required": ["items"],
                                            "properties": {"items": {"type": "array"}}}), **_problems(401, 403)}}},
            "/v1/applications": {
                "post": {
                    "summary": "Submit a bundled application", "security": secured,
                    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                    "schema": {"type": "string", "minLength": 1, "maxLength": 200}}],
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Submission"}}}},
                    "responses": {"202": {**_json(app_ref, "Accepted"),
                                          "headers": {"Location": {"schema": {"type": "string"}}}},
                                  **_problems(400, 401, 403, 409, 413, 415, 422, 429)},
                },
                "get": {
                    "summary": "The caller's applications", "security": secured,
                    "parameters": [
                        {"name": "status", "in": "query", "schema": {"enum": app_statuses}},
                        {"name": "service", "in": "query", "schema": {"type": "string"}},
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    ],
                    "responses": {"200": _json({"type": "object", "required": ["items", "next_cursor"],
                                                "properties": {"items": {"type": "array", "items": app_ref},
                                                               "next_cursor": {"type": ["string", "null"]}}}),
                                  **_problems(400, 401, 403, 429)},
                },
            },
            "/v1/applications/{app_id}": {"get": {
                "summary": "One application", "security": secured, "parameters": [id_param],
                "responses": {"200": _json(app_ref), **_problems(401, 403, 404)}}},
            "/v1/applications/{app_id}/history": {"get": {
                "summary": "The ordered events of the application", "security": secured, "parameters": [id_param],
                "responses": {"200": _json({"type": "object", "required": ["application_id", "events"],
                                            "properties": {"application_id": {"type": "string"},
                                                           "events": {"type": "array", "items": {
                                                               "$ref": "#/components/schemas/Event"}}}}),
                              **_problems(401, 403, 404)}}},
            "/v1/applications/{app_id}/events": {"get": {
                "summary": "Server-sent events of the application, live", "security": secured,
                "parameters": [id_param, {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "event stream",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                              **_problems(401, 403, 404)}}},
            "/v1/applications/{app_id}/cancel": {"post": {
                "summary": "Cancel what has not been decided", "security": secured, "parameters": [id_param],
                "responses": {"202": _json(app_ref, "Accepted"), **_problems(401, 403, 404, 409)}}},
            "/v1/agencies/{agency}/callbacks": {"post": {
                "summary": "An agency's decision, signed with its secret",
                "parameters": [{"name": "agency", "in": "path", "required": True, "schema": {"type": "string"}},
                               {"name": "X-Satupintu-Signature", "in": "header", "required": True,
                                "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["request_id", "status"],
                    "properties": {"request_id": {"type": "string"},
                                   "status": {"enum": ["accepted", "approved", "rejected", "cancelled"]},
                                   "reference": {"type": "string"}, "reason": {"type": "string"}}}}}},
                "responses": {"202": _json({"type": "object"}, "Accepted"),
                              **_problems(400, 401, 404, 409, 413, 415, 422)}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json({"type": "object"})}}},
            "/readyz": {"get": {"summary": "Readiness: store and broker reachable",
                                "responses": {"200": _json({"type": "object"}), "503": _json({"type": "object"})}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
                "description": "text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json({"type": "object"})}}},
        },
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    return Response(json.dumps(spec(sorted(ctx().catalog.services))), mimetype="application/json")
