"""Spyne helpers shared by the SOAP agencies: faults, the filing call, WSGI wrapping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spyne import Application, Fault
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

from .agency import Agency

# The WSGI environ key under which the desk leaves a request's X-Road `id` header: behind
# X-Road the request id travels there, not in the body.
XROAD_ID = "satupintu.sandbox.xroad_id"

HTTP_503 = "503 Service Unavailable"


def client_fault(message: str, code: str = "Client") -> Fault:
    return Fault(faultcode=code, faultstring=message)


def require(**fields: Any) -> None:
    """Raise a Client fault naming the empty ones among ``fields``."""
    if any(value is None or str(value).strip() == "" for value in fields.values()):
        raise client_fault(f"{' and '.join(fields)} are required")


def file_once(
    ctx: Any,
    agency: Agency,
    request_id: str,
    operation: str,
    process: Callable[[], Any],
):
    """Replay, fail (injected, HTTP 503 Server fault) or ``process()`` a SOAP filing call once."""
    filing = agency.ledger.file(
        request_id, operation, agency.knobs.get("failure_rate"), process
    )
    if filing.failed:
        ctx.transport.resp_code = HTTP_503
        raise Fault(faultcode="Server", faultstring="temporarily unavailable")
    return filing.answer


def stored_answer(agency: Agency, operation: str, request_id: str) -> dict[str, Any]:
    """The answer of the filing with ``request_id`` ("did it go through?"), or Client.NotFound."""
    agency.ledger.count(operation)
    require(request_id=request_id)
    answer = agency.ledger.answer_for(request_id)
    if answer is None:
        raise client_fault(f"no filing with request_id {request_id}", "Client.NotFound")
    return answer


def wsgi_app(service: type, tns: str, name: str) -> WsgiApplication:
    application = Application(
        [service], tns=tns, name=name, in_protocol=Soap11(), out_protocol=Soap11()
    )
    return WsgiApplication(application)
