"""The SOAP adapter: one agency reached through its WSDL, with zeep.

The WSDL is parsed once per process (``adapters.soap_client``), the client is built lazily
and shared by the worker's threads.  The stable request id goes into the request field
named by ``request_id_field`` (and an optional SOAP header); answers are serialized to
plain JSON-able dicts and mapped by ``adapters.answers``.  SOAP Faults, transport errors
and malformed or unsafe XML are translated by ``adapters.soap_errors``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, ClassVar

from lxml import etree
from zeep.helpers import serialize_object

from core.domain.errors import (
    AgencyError,
    ConfigError,
    PermanentAgencyError,
    UnsupportedOperation,
)
from core.masking import PERSONAL_FIELDS
from core.settings import Settings

from . import xroad as xroad_protocol
from .answers import RESPONSE_SCHEMA, jsonable, map_answer, response_problems
from .auth import AUTH_FIELDS, auth_problems, wsse_token
from .base import Adapter, AgencyRequest, Outcome, OutcomeKind
from .egress import policy_for_agency
from .plugins import AnswerCapture, HeaderAdder, MaskingLogger, call_headers
from .soap_client import (
    AgencyTransport,
    build_client,
    choose_binding,
    load_document,
    operation_names,
    wsdl_location,
)
from .soap_errors import FAULT_ACTIONS, NotFoundFault, translate
from .transport import agency_session

SUB_OPERATIONS = ("poll", "cancel", "lookup")
_FAULTS = {"type": "object", "additionalProperties": {"enum": list(FAULT_ACTIONS)},
           "description": "faultcode (or a substring of 'code: message') to rejected|transient|permanent|not_found"}
_CALL = {
    "operation": {"type": "string", "minLength": 1},
    "request_id_field": {"type": ["string", "null"]},
    "request_id_header": {"type": "string", "pattern": "^\\{[^}]+\\}.+$",
                          "description": "a SOAP header element {namespace}Name carrying the request id"},
    "response": RESPONSE_SCHEMA,
    "faults": _FAULTS,
}
_SUB = {"type": "object", "additionalProperties": False, "required": ["operation"],
        "properties": {**_CALL, "reference_field": {"type": "string", "minLength": 1}}}


class SoapAdapter(Adapter):
    """An agency with a SOAP 1.1/1.2 service described by a WSDL (optionally via X-Road)."""

    name = "soap"
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["wsdl"],
        "properties": {
            "wsdl": {"type": "string", "minLength": 1},
            "soap_version": {"enum": ["1.1", "1.2"]},
            "service": {"type": "string"},
            "port": {"type": "string"},
            "operation_timeout": {"type": "number", "exclusiveMinimum": 0},
            "strict": {"type": "boolean"},
            "verify": {"type": ["boolean", "string"]},
            "allowed_hosts": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "masked_elements": {"type": "array", "items": {"type": "string"}},
            "max_answer_bytes": {"type": "integer", "minimum": 1},
        },
    }
    operation_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["operation"],
        "properties": {**_CALL, **{name: _SUB for name in SUB_OPERATIONS}},
    }

    def __init__(self, agency: Any, settings: Settings | None = None) -> None:
        super().__init__(agency, settings)
        options = agency.options or {}
        self._strict = bool(options.get("strict", True))
        self._timeout = float(options.get("operation_timeout", agency.read_timeout))
        # The whole call's time (``timeouts.total``); an operation timeout of its own raises it
        # to at least twice that, so that a slow operation is never cut by the default.
        self.total_timeout = agency.total_timeout
        if "operation_timeout" in options:
            self.total_timeout = max(self.total_timeout, 2 * self._timeout)
        self._xroad = xroad_protocol.XRoad.from_agency(agency)
        self._address = self._xroad.security_server if self._xroad else agency.endpoint
        self._service: Any = None
        self._client: Any = None
        self._operations: set[str] = set()
        self._lock = threading.Lock()

    # -- operations ------------------------------------------------------------------

    def send(self, request: AgencyRequest) -> Outcome:
        spec = self._operation(request)
        return self._call(request, spec, request.operation, dict(request.payload), id_field="request_id")

    def poll(self, request: AgencyRequest) -> Outcome:
        spec = self._sub(request, "poll")
        return self._call(request, spec, f"{request.operation}.poll", self._by_reference(request, spec))

    def cancel(self, request: AgencyRequest) -> Outcome:
        spec = self._sub(request, "cancel")
        return self._call(request, spec, f"{request.operation}.cancel", self._by_reference(request, spec),
                          default_kind=OutcomeKind.CANCELLED)

    def lookup(self, request: AgencyRequest) -> Outcome | None:
        spec = self._sub(request, "lookup")
        try:
            return self._call(request, spec, f"{request.operation}.lookup", {}, lookup=True,
                              id_field="request_id")
        except NotFoundFault:
            return None

    def check(self) -> list[str]:
        agency, problems = self.agency, []
        problems += [f"{agency.file}: {p}" for p in auth_problems(agency.auth or {}, supported=set(AUTH_FIELDS))]
        try:
            self._proxy()
        except (AgencyError, ConfigError) as exc:
            return [*problems, f"{agency.file}: options.wsdl: {exc}"]
        names = self._operations
        for name, op in agency.operations.items():
            calls = [(f"operations.{name}", op)] + [(f"operations.{name}.{s}", op[s]) for s in SUB_OPERATIONS if s in op]
            for where, call in calls:
                if call.get("operation") not in names:
                    problems.append(f"{agency.file}: {where}.operation: the WSDL has no operation "
                                    f"{call.get('operation')!r}; it has: {', '.join(sorted(names))}")
                problems += [f"{agency.file}: {p}" for p in response_problems(call.get("response"), f"{where}.response")]
        return problems

    def close(self) -> None:
        with self._lock:
            client, self._client, self._service = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):  # close() never raises
                client.transport.session.close()

    # -- internals -------------------------------------------------------------------

    def _operation(self, request: AgencyRequest) -> dict[str, Any]:
        spec = self.agency.operations.get(request.operation)
        if spec is None:
            raise PermanentAgencyError(f"agency {self.agency.id} has no operation {request.operation!r}; "
                                       f"it has: {', '.join(sorted(self.agency.operations))}",
                                       agency=self.agency.id, request_id=request.request_id)
        return spec

    def _sub(self, request: AgencyRequest, kind: str) -> dict[str, Any]:
        spec = self._operation(request).get(kind)
        if spec is None:
            raise UnsupportedOperation(f"agency {self.agency.id!r} operation {request.operation!r} "
                                       f"has no {kind}: section")
        return spec

    def _by_reference(self, request: AgencyRequest, spec: dict[str, Any]) -> dict[str, Any]:
        if not request.reference:
            raise PermanentAgencyError(f"agency {self.agency.id} operation {request.operation}: "
                                       f"{spec['operation']} needs the agency reference, which is not known yet",
                                       agency=self.agency.id, request_id=request.request_id)
        return {spec.get("reference_field", "reference"): request.reference}

    def _proxy(self) -> Any:
        """The zeep service proxy, built once: WSDL (cached per process), transport, plugins."""
        service = self._service
        if service is not None:
            return service
        with self._lock:
            if self._service is None:
                self._service = self._build()
            return self._service

    def _build(self) -> Any:
        agency, options = self.agency, self.agency.options or {}
        auth = agency.auth or {}
        try:
            session = agency_session(agency, self.settings, total_timeout=self.total_timeout)
            wsse = wsse_token(auth) if auth.get("type") == "wsse" else None
        except ConfigError as exc:
            raise PermanentAgencyError(f"agency {agency.id}: cannot set up the connection: {exc}",
                                       agency=agency.id) from exc
        transport = AgencyTransport(session, connect_timeout=agency.connect_timeout, operation_timeout=self._timeout)
        location = wsdl_location(str(options["wsdl"]), agency.file)
        hosts = policy_for_agency(agency, self.settings).allowed_hosts
        try:
            document = load_document(location, transport, strict=self._strict, hosts=hosts)
            binding = choose_binding(document, soap_version=str(options.get("soap_version", "1.1")),
                                     service=options.get("service"), port=options.get("port"))
        except Exception as exc:
            raise translate(exc, agency=agency.id, request_id="", where=f"loading WSDL {location}",
                            timeout=transport.load_timeout) from exc
        plugins = [HeaderAdder(http=options.get("headers")), AnswerCapture(),
                   MaskingLogger(PERSONAL_FIELDS | set(options.get("masked_elements", [])))]
        self._client = build_client(document, transport, strict=self._strict, wsse=wsse, plugins=plugins)
        self._operations = operation_names(binding)
        return self._client.create_service(binding.name.text, self._address)

    def _call(self, request: AgencyRequest, spec: dict[str, Any], operation: str, arguments: dict[str, Any], *,
              default_kind: OutcomeKind | None = None, lookup: bool = False,
              id_field: str | None = None) -> Outcome:
        agency = self.agency
        soap_operation = spec["operation"]
        # send and lookup carry the request id in "request_id" unless configured otherwise;
        # poll and cancel only when request_id_field says so (they go by the reference). Behind
        # X-Road the id travels in the `id` header, and the WSDL has no such body field.
        field = spec.get("request_id_field", None if self._xroad is not None else id_field)
        if field:
            arguments[field] = request.request_id
        http = {**request.headers, agency.idempotency_header: request.request_id}
        soap_headers: list[etree._Element] = []
        if spec.get("request_id_header"):
            element = etree.Element(spec["request_id_header"])
            element.text = request.request_id
            soap_headers.append(element)
        if self._xroad is not None:
            soap_headers += self._xroad.soap_headers(soap_operation, request.request_id, request.application_id)
        service = self._proxy()
        where = f"{soap_operation}"
        try:
            method = service[soap_operation]
        except (AttributeError, KeyError, ValueError) as exc:
            raise PermanentAgencyError(f"agency {agency.id}: the WSDL has no operation {soap_operation!r}",
                                       agency=agency.id, request_id=request.request_id) from exc
        try:
            with call_headers(http=http, soap=soap_headers):
                result = method(**arguments)
            answer_envelope = AnswerCapture.last()
        except Exception as exc:
            outcome_or_error = translate(exc, agency=agency.id, request_id=request.request_id, where=where,
                                         timeout=(agency.connect_timeout, self._timeout),
                                         faults=spec.get("faults"), xroad=self._xroad is not None, lookup=lookup)
            if isinstance(outcome_or_error, Outcome):
                return outcome_or_error
            raise outcome_or_error from exc
        if self._xroad is not None:
            self._xroad.check_echo(answer_envelope, soap_operation, request.request_id, agency=agency.id)
        answer = jsonable(serialize_object(result, target_cls=dict))
        if answer is None:
            answer = {}
        elif not isinstance(answer, dict):
            answer = {"value": answer}
        return map_answer(agency, operation, spec.get("response"), answer, request_id=request.request_id,
                          default_kind=default_kind)
