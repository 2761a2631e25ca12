"""The REST adapter: one agency reached over HTTP with JSON.

Each operation names a method and a path template; the payload goes as the JSON body
(POST, PUT, PATCH), the stable request id in the idempotency header, the answer is read
(bounded) and mapped by ``adapters.answers``.  The agency's one session
(``adapters.transport``: egress policy, total time, answer cap, auth, TLS, no redirects)
is built once, lazily, and shared by the worker's threads.
"""

from __future__ import annotations

import contextlib
import functools
import json
import string
import threading
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import requests
from requests.structures import CaseInsensitiveDict

from core.domain.errors import (
    AgencyError,
    ConfigError,
    PermanentAgencyError,
    TransientAgencyError,
    UnsupportedOperation,
)
from core.masking import raw_excerpt
from core.settings import Settings

from . import xroad as xroad_protocol
from .answers import RESPONSE_SCHEMA, map_answer, response_problems
from .auth import auth_problems, requests_auth
from .base import Adapter, AgencyRequest, Outcome, OutcomeKind
from .egress import policy_for_agency
from .transport import DEFAULT_MAX_ANSWER_BYTES, AgencySession, agency_error, agency_session

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
SUB_OPERATIONS = {"poll": "GET", "cancel": "DELETE", "lookup": "GET"}
REST_AUTH_TYPES = {"none", "bearer", "basic", "api_key", "hmac", "mtls"}

_STATUS_ITEM = {"anyOf": [{"type": "integer", "minimum": 100, "maximum": 599},
                          {"type": "string", "pattern": "^[1-5]xx$"}]}
_STATUS_LIST = {"type": "array", "items": _STATUS_ITEM, "uniqueItems": True}
_METHOD = {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]}
_CALL_PROPERTIES = {
    "method": _METHOD,
    "path": {"type": "string"},
    "response": RESPONSE_SCHEMA,
    "success_statuses": _STATUS_LIST,
    "service_code": {"type": "string", "minLength": 1, "description": "X-Road serviceCode (default: the operation name)"},
}
_SUB_OPERATION_SCHEMA = {"type": "object", "additionalProperties": False, "properties": _CALL_PROPERTIES}


def _status_matcher(items: list[int | str]) -> set[int]:
    codes: set[int] = set()
    for item in items:
        if isinstance(item, int):
            codes.add(item)
        else:
            first = int(item[0]) * 100
            codes.update(range(first, first + 100))
    return codes


DEFAULT_TRANSIENT = _status_matcher([408, 429, "5xx"])
DEFAULT_SUCCESS = _status_matcher(["2xx"])

# As ``json.dumps(payload, allow_nan=False)`` (requests' ``json=``), without building an
# encoder for every call: ``dumps`` makes a new one whenever an option is not the default.
_PAYLOAD_ENCODER = json.JSONEncoder(allow_nan=False)


@functools.lru_cache(maxsize=256)
def _template(template: str) -> tuple[tuple[str, str | None], ...]:
    """A path template's (literal, field name) pieces, parsed once."""
    return tuple((literal, name) for literal, name, _spec, _conversion in string.Formatter().parse(template))


def render_path(template: str, request: AgencyRequest, *, agency: str) -> str:
    """Fill ``{request_id}``, ``{reference}``, ``{application_id}``, ``{service}``, ``{step}``
    and ``{<payload field>}`` (top-level payload keys) into ``template``, URL-quoted."""
    pieces = _template(template)
    if len(pieces) == 1 and pieces[0][1] is None:
        return pieces[0][0]  # no fields: the template is the path
    values: dict[str, Any] = dict(request.payload)
    values.update(request_id=request.request_id, reference=request.reference,
                  application_id=request.application_id, service=request.service, step=request.step)
    out = []
    for literal, name in pieces:
        out.append(literal)
        if name is None:
            continue
        value = values.get(name)
        if value is None or isinstance(value, (dict, list)):
            raise PermanentAgencyError(
                f"agency {agency} operation {request.operation}: path {template!r} needs {{{name}}}, "
                f"which this request does not have", agency=agency, request_id=request.request_id)
        out.append(quote(str(value).lower() if isinstance(value, bool) else str(value), safe=""))
    return "".join(out)


def template_problems(template: str, where: str) -> list[str]:
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        return [f"{where}: bad path template {template!r}: {exc}"]
    return [f"{where}: path field {{{name}}} must be a plain name" for name in fields
            if not name.isidentifier()]


class RestAdapter(Adapter):
    """An agency with a JSON-over-HTTP API (optionally behind an X-Road security server)."""

    name = "rest"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "transient_statuses": _STATUS_LIST,
            "permanent_statuses": _STATUS_LIST,
            "max_answer_bytes": {"type": "integer", "minimum": 1},
            "verify": {"type": ["boolean", "string"]},
            "allowed_hosts": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "headers": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "static HTTP headers sent on every call"},
        },
    }
    operation_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {**_CALL_PROPERTIES, **{name: _SUB_OPERATION_SCHEMA for name in SUB_OPERATIONS}},
    }

    def __init__(self, agency: Any, settings: Settings | None = None) -> None:
        super().__init__(agency, settings)
        options = agency.options or {}
        self._transient = _status_matcher(options["transient_statuses"]) if "transient_statuses" in options \
            else DEFAULT_TRANSIENT
        self._permanent = _status_matcher(options.get("permanent_statuses", []))
        self._max_bytes = int(options.get("max_answer_bytes", DEFAULT_MAX_ANSWER_BYTES))
        self._static_headers = CaseInsensitiveDict(options.get("headers", {}))
        self._xroad = xroad_protocol.XRoad.from_agency(agency)
        self._policy = policy_for_agency(agency, self.settings)
        self._timeout = (agency.connect_timeout, agency.read_timeout)
        self._session: AgencySession | None = None
        self._lock = threading.Lock()

    # -- the operations ---------------------------------------------------------------

    def send(self, request: AgencyRequest) -> Outcome:
        operation = self._operation(request)
        return self._call(request, operation, request.operation, default_method="POST")

    def poll(self, request: AgencyRequest) -> Outcome:
        return self._call(request, self._sub_operation(request, "poll"), f"{request.operation}.poll",
                          default_method="GET")

    def cancel(self, request: AgencyRequest) -> Outcome:
        # Without a status expression, a 2xx answer means the agency cancelled.
        return self._call(request, self._sub_operation(request, "cancel"), f"{request.operation}.cancel",
                          default_method="DELETE", default_kind=OutcomeKind.CANCELLED)

    def lookup(self, request: AgencyRequest) -> Outcome | None:
        return self._call(request, self._sub_operation(request, "lookup"), f"{request.operation}.lookup",
                          default_method="GET", missing_is_none=True)

    def check(self) -> list[str]:
        agency = self.agency
        problems = [f"{agency.file}: {p}" for p in auth_problems(agency.auth or {}, supported=REST_AUTH_TYPES)]
        if not problems:
            try:
                requests_auth(agency.auth or {})
            except ConfigError as exc:
                problems.append(f"{agency.file}: auth: {exc}")
        for name, operation in agency.operations.items():
            calls = [(f"operations.{name}", operation)] + [
                (f"operations.{name}.{sub}", operation[sub]) for sub in SUB_OPERATIONS if sub in operation]
            for where, call in calls:
                problems += [f"{agency.file}: {p}" for p in response_problems(call.get("response"), f"{where}.response")]
                problems += [f"{agency.file}: {p}" for p in template_problems(call.get("path", ""), f"{where}.path")]
        base = self._xroad.security_server if self._xroad else agency.endpoint
        problem = self._policy.host_problem(urlsplit(base).hostname or "")
        if problem:
            problems.append(f"{agency.file}: endpoint: {problem}")
        return problems

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):  # close() never raises
                session.close()

    # -- internals --------------------------------------------------------------------

    def _operation(self, request: AgencyRequest) -> dict[str, Any]:
        operation = self.agency.operations.get(request.operation)
        if operation is None:
            raise PermanentAgencyError(
                f"agency {self.agency.id} has no operation {request.operation!r}; "
                f"it has: {', '.join(sorted(self.agency.operations))}",
                agency=self.agency.id, request_id=request.request_id)
        return operation

    def _sub_operation(self, request: AgencyRequest, kind: str) -> dict[str, Any]:
        sub = self._operation(request).get(kind)
        if sub is None:
            raise UnsupportedOperation(
                f"agency {self.agency.id!r} operation {request.operation!r} has no {kind}: section")
        # Behind X-Road, poll/cancel/lookup are paths of the same REST service by default.
        parent = self._operation(request)
        return {**sub, "service_code": sub.get("service_code") or parent.get("service_code") or request.operation}

    def session(self) -> AgencySession:
        """The agency's one session, built on first use (headers, auth, TLS, connection pools)."""
        session = self._session
        if session is not None:
            return session
        with self._lock:
            if self._session is None:
                headers = {"Accept": "application/json", **dict(self._static_headers)}
                self._session = agency_session(self.agency, self.settings, total_timeout=self.agency.total_timeout,
                                               headers=headers)
            return self._session

    def _fail(self, cls: type[AgencyError], message: str, request: AgencyRequest, *,
              status_code: int | None = None, raw: bytes | str | None = None) -> AgencyError:
        return cls(f"agency {self.agency.id}: {message}", agency=self.agency.id, request_id=request.request_id,
                   status_code=status_code, raw=raw_excerpt(raw))

    def _call(self, request: AgencyRequest, spec: dict[str, Any], operation: str, *, default_method: str,
              default_kind: OutcomeKind | None = None, missing_is_none: bool = False) -> Outcome | None:
        agency = self.agency
        method = spec.get("method", default_method).upper()
        path = render_path(spec.get("path", ""), request, agency=agency.id)
        headers = {**request.headers, agency.idempotency_header: request.request_id}
        if self._xroad is not None:
            url = self._xroad.rest_url(spec.get("service_code") or request.operation, path)
            headers.update(self._xroad.rest_headers(request.request_id, request.application_id))
        else:
            url = agency.endpoint + path
        try:
            session = self.session()
        except ConfigError as exc:
            raise self._fail(PermanentAgencyError, f"cannot set up the connection: {exc}", request) from exc

        body = None
        if method in BODY_METHODS and request.payload is not None:
            try:  # as requests' json=: no NaN, UTF-8
                body = _PAYLOAD_ENCODER.encode(request.payload).encode()
            except (TypeError, ValueError) as exc:
                raise self._fail(PermanentAgencyError, f"{_where(method, url)}: bad request: the payload is not JSON: {exc}",
                                 request) from exc
            if "content-type" not in self._static_headers:
                headers["Content-Type"] = "application/json"
        try:
            reply = session.call(method, url, data=body, headers=headers, timeout=self._timeout)
        except (requests.RequestException, ValueError) as exc:
            raise agency_error(exc, agency=agency.id, request_id=request.request_id, where=_where(method, url),
                               timeout=self._timeout) from exc
        return self._interpret(request, spec, operation, method, url, reply,
                               default_kind=default_kind, missing_is_none=missing_is_none)

    def _interpret(self, request: AgencyRequest, spec: dict[str, Any], operation: str, method: str, url: str,
                   reply: requests.Response, *, default_kind: OutcomeKind | None,
                   missing_is_none: bool) -> Outcome | None:
        code, body = reply.status_code, reply.content
        success = _success_statuses(tuple(spec["success_statuses"])) if "success_statuses" in spec else DEFAULT_SUCCESS
        if missing_is_none and code == 404:
            return None
        if code not in success:
            where = _where(method, url)
            if 300 <= code < 400:
                raise self._fail(PermanentAgencyError,
                                 f"{where}: HTTP {code} to {reply.headers.get('Location', '?')}: "
                                 f"redirects are not followed", request, status_code=code, raw=body)
            answer = _loads_or_none(body)
            if self._xroad is not None or reply.headers.get("X-Road-Error"):
                error = xroad_protocol.rest_error(reply.headers, answer, agency=self.agency.id,
                                                  request_id=request.request_id, status_code=code, raw=body)
                if error is not None:
                    raise error
            transient = code not in self._permanent and code in self._transient
            message = f"{where}: HTTP {code} {reply.reason or ''}".rstrip()
            if code in (401, 403):
                message += f" (credentials refused; auth type {self.agency.auth.get('type', 'none')!r})"
            detail = _detail(answer)
            if detail:
                message += f": {detail}"
            raise self._fail(TransientAgencyError if transient else PermanentAgencyError, message, request,
                             status_code=code, raw=body)
        if not body.strip():
            answer = {}
        else:
            try:
                answer = json.loads(body)
            except ValueError as exc:
                raise self._fail(PermanentAgencyError, f"{_where(method, url)}: answer is not JSON: {exc}", request,
                                 status_code=code, raw=body) from exc
        # ``json.loads`` made the answer of dicts, lists, str, numbers, bool and None: nothing to convert.
        return map_answer(self.agency, operation, spec.get("response"), answer, request_id=request.request_id,
                          default_kind=default_kind, status_code=code, plain=True)


def _where(method: str, url: str) -> str:
    """``POST /companies``: where a call went, for error messages (built only for those)."""
    return f"{method} {urlsplit(url).path}"


@functools.lru_cache(maxsize=256)
def _success_statuses(items: tuple[int | str, ...]) -> frozenset[int]:
    return frozenset(_status_matcher(list(items)))


def _loads_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body.strip() else None
    except ValueError:
        return None


def _detail(answer: Any) -> str | None:
    """A short human reason from a JSON error answer (problem+json, ``{"error": ...}``, ...)."""
    if not isinstance(answer, dict):
        return None
    for key in ("detail", "reason", "message", "error", "title"):
        value = answer.get(key)
        if isinstance(value, str) and value:
            return raw_excerpt(value, 300)
    return None
