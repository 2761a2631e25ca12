"""GET /openapi.json: OpenAPI 3.1 of the JSON API (DESIGN §3).

Every operation has a stable snake_case ``operationId`` and a tag, every array its item
schema, so a generated client (openapi-python-client) parses every answer.  The HTML pages
of the dashboard and its login form are not API: they are left out.  Every operation may
answer 400, since a NUL byte in any query is refused before a view sees it
(``problems.refuse_nul_bytes``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, json

from core.domain.status import ApplicationStatus, RequestStatus
from core.model import Catalog

from .. import __version__
from .context import ctx
from .openapi_submission import submission

bp = Blueprint("openapi", __name__)

REQUEST_STATUSES = [s.value for s in RequestStatus]
APPLICATION_STATUSES = [s.value for s in ApplicationStatus]

# No text the gateway takes from a path or a query may hold a NUL byte (400, see above).
NO_NUL = "^[^\\x00]*$"


_TITLES = {400: "malformed request", 401: "no valid API key", 403: "the key lacks the scope",
           404: "not found, or not the caller's", 409: "conflict", 410: "gone", 413: "the body is too large",
           415: "the body's media type (or charset) is not accepted", 422: "validation failed: errors name each field",
           429: "rate limited", 503: "not available"}
_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    429: {"Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"},
                          "description": "seconds until the client's rate limit lets a request through"}},
}
# What every operation that needs a key may also answer.
_SECURED = (401, 403, 429)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _text(**schema: Any) -> dict[str, Any]:
    """A string parameter's schema: any text without a NUL byte."""
    return {"type": "string", "pattern": NO_NUL, **schema}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _object(required: list[str], /, **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _items(item: dict[str, Any]) -> dict[str, Any]:
    """A list answer: ``{"items": [...]}``."""
    return _object(["items"], items=_array(item))


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problems(codes: set[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for code in sorted(codes):
        out[str(code)] = {"description": _TITLES[code],
                          "content": {"application/problem+json": {"schema": _ref("Problem")}}}
        if code in _HEADERS:
            out[str(code)]["headers"] = _HEADERS[code]
    return out


def _operation(operation_id: str, tag: str, summary: str, answers: dict[str, Any], *, problems: tuple[int, ...] = (),
               parameters: tuple[dict[str, Any], ...] = (), body: dict[str, Any] | None = None,
               secured: bool = True) -> dict[str, Any]:
    """One operation: its answers plus the problems it may give (400 always; 401, 403, 429 with a key)."""
    op: dict[str, Any] = {"operationId": operation_id, "tags": [tag], "summary": summary}
    if secured:
        op["security"] = [{"bearer": []}]
    if parameters:
        op["parameters"] = list(parameters)
    if body is not None:
        op["requestBody"] = body
    op["responses"] = {**answers, **_problems({400, *problems, *(_SECURED if secured else ())})}
    return op


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    param = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        param["description"] = description
    return param


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _limit(most: int) -> dict[str, Any]:
    return _query("limit", {"type": "integer", "minimum": 1, "maximum": most}, f"at most {most}; 400 outside 1..{most}")


APP_ID = _path("app_id", _text(maxLength=100))
DOC_ID = _path("doc_id", _text(maxLength=100))


def _schemas(catalog: Catalog) -> dict[str, Any]:
    submission_schema, data_schemas = submission(catalog)
    text, maybe = {"type": "string"}, {"type": ["string", "null"]}
    count, maybe_number = {"type": "integer", "minimum": 0}, {"type": ["number", "null"]}
    retry = {"anyOf": [_ref("Retry"), {"type": "null"}], "description": "the next attempt, while the step retries"}
    summary = {"id": text, "service": text, "status": _ref("ApplicationStatus"), "reference": maybe,
               "created_at": text, "updated_at": text,
               "steps": _array(_object(["step", "agency", "status", "attempts", "retry"], step=text, agency=text,
                                       status=_ref("RequestStatus"), attempts=count, retry=retry))}
    dead_letter = _ref("DeadLetter")
    return {
        "ApplicationStatus": {"enum": APPLICATION_STATUSES},
        "RequestStatus": {"enum": REQUEST_STATUSES},
        "Problem": _object(["type", "title", "status", "detail"], type=text, title=text, status={"type": "integer"},
                           detail=text, errors=_array(_object(["path", "message"], path=text, message=text))),
        "Request": _object(["step", "agency", "status", "agency_reference", "reason", "attempts", "updated_at"],
                           step=text, agency=text, request_id=text, status=_ref("RequestStatus"),
                           agency_reference=maybe, reason=maybe, attempts=count, updated_at=text, due_at=maybe,
                           deemed={"type": "boolean"},
                           corrections=_array(_object(["field", "message"], field=text, message=text))),
        "Application": _object(["id", "service", "status", "reference", "created_at", "updated_at", "requests"],
                               id=text, service=text, status=_ref("ApplicationStatus"), reference=maybe,
                               created_at=text, updated_at=text, due_at=maybe, correct_by=maybe,
                               overdue={"type": "boolean"}, requests=_array(_ref("Request"))),
        "ApplicationPage": _object(["items", "next_cursor"], items=_array(_ref("Application")), next_cursor=maybe),
        "Submission": submission_schema,
        **data_schemas,
        "Event": _object(["id", "type", "occurred_at"], id={"type": "integer"}, type=text, step=maybe, status=maybe,
                         request_id=maybe, cause=maybe, detail={"type": "object"}, occurred_at=text,
                         recorded_at=text),
        "History": _object(["application_id", "events"], application_id=text, events=_array(_ref("Event"))),
        "Service": _object(
            ["id", "title", "version", "input_schema", "steps", "documents"], id=text, title=text,
            version={"type": ["integer", "string"]}, description=maybe, input_schema={"type": "object"},
            steps=_array(_object(["step", "agency", "operation", "after"], step=text, agency=text, operation=text,
                                 after=_array(text), title=maybe, documents=_array(text))),
            documents={"type": "object", "additionalProperties": _ref("DocumentKind")}),
        "DocumentKind": _object(["title", "required", "media_types", "max_bytes"], title=text,
                                required={"type": "boolean"}, media_types=_array(text), max_bytes=count),
        "Document": _object(["id", "kind", "filename", "media_type", "size", "sha256", "scan"], id=text, kind=text,
                            filename=text, media_type=text, size=count, sha256=text, scan=text, created_at=text,
                            deleted_at=text),
        "Callback": _object(["request_id", "status"], request_id={"type": "string", "minLength": 1, "maxLength": 64},
                            status={"enum": ["accepted", "approved", "rejected", "cancelled"]},
                            reference={"type": "string", "maxLength": 200},
                            reason={"type": "string", "maxLength": 2000}),
        "Health": _object(["status"], status=text),
        "Readiness": _object(["status", "checks"], status=text, checks={"type": "object"},
                             circuits={"type": "object", "additionalProperties": text}),
        "OpsApplication": _object(list(summary), **summary),
        "Retry": _object(["next_attempt_at", "next_attempt", "reason"], next_attempt_at=text,
                         next_attempt={"type": ["integer", "null"]}, reason=text),
        "OpsApplicationDetail": _object(
            ["id", "service", "status", "requests", "data", "timeline", "dag", "dead_letters"], id=text, service=text,
            status=_ref("ApplicationStatus"), reference=maybe, created_at=text, updated_at=text, due_at=maybe,
            overdue={"type": "boolean"}, client_id=text, data={"type": "object", "description": "personal data masked"},
            requests=_array({"allOf": [_ref("Request"), _object(["retry"], retry=retry)]}),
            timeline=_array(_object(["type", "lane", "occurred_at"], type=text, lane=text, origin=text, step=maybe,
                                    status=maybe, cause=maybe, occurred_at=maybe)),
            dag=_object(["nodes", "edges"], nodes=_array(_object(
                ["step", "agency", "layer", "status", "attempts"], step=text, title=maybe, agency=text, layer=count,
                status=text, attempts=count, retrying={"type": "boolean"})),
                edges=_array(_object(["from", "to"], **{"from": text, "to": text}))),
            dead_letters=_array(dead_letter)),
        "OpsSearchResult": _object([*summary, "matched"], **summary, matched=text),
        "OpsSearch": _object(["query", "kind", "results"], query=text, kind={"enum": ["nik", "text", None]},
                             results=_array(_ref("OpsSearchResult"))),
        "AgencyHealth": _object(
            ["id", "name", "adapter", "calls", "circuit", "latency", "success_level"], id=text, name=text, adapter=text,
            success_level={"enum": ["ok", "warn", "alert", "none"], "description": "the success rate against "
                           "SATUPINTU_OPS_SUCCESS_WARN_PCT and _ALERT_PCT; none without calls"},
            decisions=text, calls=count, successes=count, failures=count, success_rate=maybe_number,
            p50_ms=maybe_number, p95_ms=maybe_number, queue_depth={"type": ["integer", "null"]},
            consumers={"type": ["integer", "null"]}, open_requests=count, dead_letters=count, circuit=text,
            latency=_array(_object(["minute", "calls"], minute=text, calls=count, p50_ms=maybe_number,
                                   p95_ms=maybe_number))),
        "DeadLetter": _object(["id", "request_id", "application_id", "agency", "reason", "attempts", "kind",
                               "what_happened", "created_at"],
                              id={"type": "integer"}, request_id=text, application_id=maybe, agency=text,
                              reason=text, attempts=count, step=maybe, created_at=text, replayed_at=maybe,
                              kind={"type": "string", "description": "the message: send, cancel, poll, ..."},
                              what_happened={"type": "string", "description": "one sentence for an operator"}),
        "BulkReplay": {**_object(
            ["dry_run"], dry_run={"type": "boolean"},
            would_replay=count, by_agency={"type": "object", "additionalProperties": count}, ids=_array(count),
            by=text, why=text, rate={"type": "number"}, counts={"type": "object", "additionalProperties": count},
            results=_array(_object(["id", "result"], id=count, request_id=maybe, application_id=maybe, agency=maybe,
                                   result={"enum": ["queued", "closed", "already replayed", "went through",
                                                    "retrying", "deferred", "failed again", "unconfirmed"]},
                                   status=maybe, detail=maybe))),
            "description": "a dry run: would_replay, by_agency, ids; a replay: by, why, rate, counts and each "
                           "message's result as its history shows it"},
        "Queues": _object(["broker_ok", "queues"], broker_ok={"type": "boolean"}, detail=text,
                          queues=_array(_object(["name", "kind"], name=text, kind=text, agency=maybe,
                                                messages={"type": ["integer", "null"]},
                                                consumers={"type": ["integer", "null"]}))),
    }


def _links(parameter: str, **operations: str) -> dict[str, Any]:
    """What a client (and schemathesis' stateful run) may do next with the id of what it made."""
    return {name: {"operationId": op, "parameters": {parameter: "$response.body#/id"}} for name, op in operations.items()}


def _v1_paths(catalog: Catalog) -> dict[str, Any]:
    app_doc = _json(_ref("Application"))
    services = {"enum": sorted(catalog.services)} if catalog.services else _text()
    return {
        "/v1/services": {"get": _operation("list_services", "services", "The catalog",
                                           {"200": _json(_items(_ref("Service")))})},
        "/v1/applications": {
            "post": _operation(
                "submit_application", "applications", "Submit a bundled application",
                {"202": {**_json(_ref("Application"), "Accepted"), "headers": {"Location": {"schema": {"type": "string"}}},
                         "links": _links("app_id", GetApplication="get_application",
                                         GetHistory="get_application_history", Cancel="cancel_application")}},
                problems=(409, 413, 415, 422),
                parameters=({"name": "Idempotency-Key", "in": "header", "required": False,
                             "schema": {"type": "string", "minLength": 1, "maxLength": 200}},),
                body=_json_body(_ref("Submission"))),
            "get": _operation(
                "list_applications", "applications", "The caller's applications, newest first",
                {"200": _json(_ref("ApplicationPage"))},
                parameters=(_query("status", _ref("ApplicationStatus")), _query("service", services),
                            _query("cursor", _text(), "next_cursor of the page before"), _limit(100))),
        },
        "/v1/applications/{app_id}": {"get": _operation(
            "get_application", "applications", "One application", {"200": app_doc}, problems=(404,),
            parameters=(APP_ID,))},
        "/v1/applications/{app_id}/history": {"get": _operation(
            "get_application_history", "applications", "The ordered events of the application (personal data masked)",
            {"200": _json(_ref("History"))}, problems=(404,), parameters=(APP_ID,))},
        "/v1/applications/{app_id}/events": {"get": _operation(
            "stream_application_events", "applications", "Server-sent events of the application, live",
            {"200": {"description": "event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
            problems=(404,),
            parameters=(APP_ID, {"name": "Last-Event-ID", "in": "header", "required": False,
                                 "schema": {"type": "string", "pattern": "^[0-9]*$"}},
                        _query("last_event_id", {"type": "integer"}),
                        _query("timeout", {"type": "number", "minimum": 0, "maximum": 3600},
                               "seconds the stream stays open, at most SATUPINTU_EVENTS_MAX_SECONDS (300 by "
                               "default); 429 with Retry-After when the client or the gateway has all the "
                               "streams it may have open")))},
        "/v1/applications/{app_id}/cancel": {"post": _operation(
            "cancel_application", "applications", "Cancel what has not been decided",
            {"202": _json(_ref("Application"), "Accepted")}, problems=(404, 409), parameters=(APP_ID,))},
        "/v1/agencies/{agency_id}/callbacks": {"post": _operation(
            "post_agency_callback", "callbacks", "An agency's decision, signed with its secret (no API key)",
            {"202": _json({"type": "object"}, "Accepted")}, problems=(401, 404, 409, 413, 415, 422, 503),
            parameters=(_path("agency_id", _text()),
                        {"name": "X-Satupintu-Signature", "in": "header", "required": True,
                         "description": "t=<unix>,v1=<hex hmac-sha256 of 't.body'>", "schema": {"type": "string"}}),
            body=_json_body(_ref("Callback")), secured=False)},
        "/v1/documents": {"post": _operation(
            "upload_document", "documents", "Upload a document: streamed, type sniffed, virus-scanned",
            {"201": {**_json(_ref("Document"), "Created"), "headers": {"Location": {"schema": {"type": "string"}}},
                     "links": _links("doc_id", GetDocument="get_document", GetContent="get_document_content")}},
            problems=(413, 415, 422, 503),
            parameters=(_query("service", services, "the service whose kinds' rules apply"),),
            body={"required": True, "content": {"multipart/form-data": {"schema": _object(
                ["file", "kind"], file={"type": "string", "format": "binary"}, kind=_text())}}})},
        "/v1/documents/{doc_id}": {"get": _operation(
            "get_document", "documents", "A document's metadata", {"200": _json(_ref("Document"))},
            problems=(404,), parameters=(DOC_ID,))},
        "/v1/documents/{doc_id}/content": {"get": _operation(
            "get_document_content", "documents", "A document's bytes (the uploading client only)",
            {"200": {"description": "the bytes", "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}}},
            problems=(404, 410, 503), parameters=(DOC_ID,))},
    }


def _ops_paths() -> dict[str, Any]:
    """``/ops/api/...``: what the dashboard shows, as JSON (``ops`` scope)."""
    return {
        "/ops/api/overview": {"get": _operation("ops_overview", "ops", "Totals, flow and health",
                                                {"200": _json({"type": "object"})})},
        "/ops/api/applications": {"get": _operation(
            "ops_list_applications", "ops", "Recent applications, newest first (personal data masked)",
            {"200": _json({**_items(_ref("OpsApplication")), "properties": {
                "items": _array(_ref("OpsApplication")),
                "next": {"type": ["string", "null"], "description": "``before`` of the next page"}}})},
            parameters=(_query("status", _text()), _query("service", _text()), _query("agency", _text()),
                        _query("before", _text(), "the last id of the page before"), _limit(200)))},
        "/ops/api/applications/{app_id}": {"get": _operation(
            "ops_get_application", "ops", "One application with its timeline (personal data masked)",
            {"200": _json(_ref("OpsApplicationDetail"))}, problems=(404,), parameters=(APP_ID,))},
        "/ops/api/agencies": {"get": _operation("ops_list_agencies", "ops", "Per-agency health",
                                                {"200": _json(_items(_ref("AgencyHealth")))})},
        "/ops/api/queues": {"get": _operation("ops_list_queues", "ops", "Queue depths",
                                              {"200": _json(_ref("Queues"))})},
        "/ops/api/dead-letters": {"get": _operation(
            "ops_list_dead_letters", "ops", "Open dead letters, newest first",
            {"200": _json(_items(_ref("DeadLetter")))},
            parameters=(_query("agency", _text()), _query("reason", _text(), "text the reason holds"),
                        _limit(1000)))},
        "/ops/api/dead-letters/replay": {"post": _operation(
            "ops_replay_dead_letters", "ops",
            "Replay the dead letters a filter picks: a dry run with counts unless dry_run is false",
            {"200": _json(_ref("BulkReplay"))},
            problems=(422,),
            body={"required": False, "content": {"application/json": {"schema": {
                "type": "object",
                "if": {"required": ["dry_run"], "properties": {"dry_run": {"const": False}}},
                "then": {"required": ["why"], "properties": {"why": {"type": "string", "pattern": "\\S"}}},
                "properties": {
                    "agency": {"type": ["string", "null"]}, "reason": {"type": ["string", "null"]},
                    "ids": {"type": ["array", "null"], "items": {"type": "integer", "minimum": 0,
                                                                 "maximum": 2**63 - 1}},
                    "dry_run": {"type": "boolean"},
                    "why": {"type": ["string", "null"], "description": "required when dry_run is false"},
                    "rate": {"type": "number", "minimum": 0.1, "maximum": 100, "description": "per second"},
                    "wait": {"type": "number", "minimum": 0, "maximum": 120,
                             "description": "seconds to watch each message go through"}}}}}})},
        "/ops/api/dead-letters/{dead_id}/replay": {"post": _operation(
            "ops_replay_dead_letter", "ops", "Replay one dead letter",
            {"200": _json(_object(["replayed"], replayed=_array({"type": "integer"})))}, problems=(404,),
            parameters=(_path("dead_id", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}),))},
        "/ops/api/search": {"get": _operation(
            "ops_search", "ops", "Find applications by id, reference or NIK (matched by hash)",
            {"200": _json(_ref("OpsSearch"))},
            parameters=(_query("q", _text(maxLength=200)), _limit(200)))},
    }


def _health_paths() -> dict[str, Any]:
    return {
        "/healthz": {"get": _operation("get_health", "health", "Liveness", {"200": _json(_ref("Health"))},
                                       secured=False)},
        "/readyz": {"get": _operation("get_readiness", "health", "Readiness: store and broker reachable",
                                      {"200": _json(_ref("Readiness"))}, problems=(503,), secured=False)},
        "/metrics": {"get": _operation(
            "get_metrics", "health", "Prometheus metrics (an ops key or the scrape token)",
            {"200": {"description": "text format", "content": {"text/plain": {"schema": {"type": "string"}}}}})},
        "/openapi.json": {"get": _operation("get_openapi", "health", "This document",
                                            {"200": _json({"type": "object"})}, secured=False)},
    }


def spec(catalog: Catalog) -> dict[str, Any]:
    """The OpenAPI 3.1 document; ``Submission`` follows the catalog's input schemas."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Satu Pintu", "version": __version__,
                 "description": "One door to many agencies: bundled applications split into agency requests."},
        # Relative to where this document is served: the gateway answering it.
        "servers": [{"url": "/", "description": "this gateway"}],
        "tags": [{"name": "services", "description": "the catalog"},
                 {"name": "applications", "description": "bundled applications: submit, read, follow, cancel"},
                 {"name": "documents", "description": "documents that applications name by kind"},
                 {"name": "callbacks", "description": "agencies' signed decisions"},
                 {"name": "ops", "description": "what the operators' dashboard shows, as JSON"},
                 {"name": "health", "description": "liveness, readiness, metrics and this document"}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": _schemas(catalog)},
        "paths": {**_v1_paths(catalog), **_ops_paths(), **_health_paths()},
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    return Response(json.dumps(spec(ctx().catalog)), mimetype="application/json")
