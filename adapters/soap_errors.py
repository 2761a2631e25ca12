"""What a failed SOAP call means: zeep, requests and lxml errors to ours.

A SOAP Fault is looked up in the operation's ``faults:`` map first (faultcode, or a
substring of ``"code: message"``, to ``rejected`` | ``transient`` | ``permanent`` |
``not_found``); otherwise ``Client*``/``Sender`` faults are permanent and
``Server*``/``Receiver`` faults transient, and behind X-Road the security server's own
``Server.ClientProxy.*``/``Server.ServerProxy.*`` faults are named as X-Road errors.
Malformed or unsafe XML (DTDs, entities, external references) is a permanent failure.
"""

from __future__ import annotations

from typing import Any

import requests
from lxml import etree
from zeep import exceptions as zeep_errors

from core.domain.errors import (
    AgencyError,
    PermanentAgencyError,
    TransientAgencyError,
)
from core.masking import raw_excerpt

from . import xroad as xroad_protocol
from .base import Outcome, OutcomeKind
from .transport import agency_error

FAULT_ACTIONS = ("rejected", "transient", "permanent", "not_found")
UNSAFE = (zeep_errors.DTDForbidden, zeep_errors.EntitiesForbidden, zeep_errors.ExternalReferenceForbidden)
MALFORMED = (zeep_errors.XMLSyntaxError, zeep_errors.XMLParseError, etree.XMLSyntaxError)


class NotFoundFault(Exception):
    """Raised (and caught by ``lookup``) when a fault means "no such request"."""


def local_code(code: Any) -> str:
    """``soap-env:Server.ServerProxy.X`` → ``Server.ServerProxy.X``."""
    text = str(code or "")
    return text.rpartition(":")[2] if ":" in text else text


def fault_action(code: str, message: str, faults: dict[str, str] | None, *, lookup: bool) -> str | None:
    for key, action in (faults or {}).items():
        if key == code:
            return action
    haystack = f"{code}: {message}"
    for key, action in (faults or {}).items():
        if key in haystack:
            return action
    if lookup and "NotFound" in code:
        return "not_found"
    return None


def translate(exc: BaseException, *, agency: str, request_id: str, where: str, timeout: tuple[float, float],
              faults: dict[str, str] | None = None, xroad: bool = False,
              lookup: bool = False) -> Outcome | Exception:
    """The Outcome (a rejection by fault), or the error to raise, for ``exc``; transport
    failures are translated by ``adapters.transport.agency_error``, as for REST."""
    def error(cls: type[AgencyError], message: str, *, status_code: int | None = None,
              raw: Any = None) -> AgencyError:
        return cls(f"agency {agency}: {where}: {message}", agency=agency, request_id=request_id,
                   status_code=status_code, raw=raw_excerpt(raw))

    if isinstance(exc, AgencyError):
        return exc
    if isinstance(exc, zeep_errors.Fault):
        code = local_code(exc.code)
        subcodes = [local_code(getattr(s, "text", s)) for s in (exc.subcodes or [])]
        message = str(exc.message or "")
        raw = etree.tostring(exc.detail, encoding="unicode") if exc.detail is not None else None
        action = fault_action(code, message, faults, lookup=lookup)
        if action is None and subcodes:
            action = fault_action(".".join(subcodes), message, faults, lookup=lookup)
        if action == "rejected":
            return Outcome(kind=OutcomeKind.REJECTED, reason=message or code)
        if action == "not_found":
            return NotFoundFault(message)
        if action in ("transient", "permanent"):
            cls = TransientAgencyError if action == "transient" else PermanentAgencyError
            return error(cls, f"SOAP Fault {code}: {message}", raw=raw)
        if xroad and xroad_protocol.is_xroad_error_type(code):
            return xroad_protocol.xroad_error(code, message, agency=agency, request_id=request_id, raw=raw)
        transient = code.startswith(("Server", "Receiver"))
        return error(TransientAgencyError if transient else PermanentAgencyError,
                     f"SOAP Fault {code}: {message}", raw=raw)
    if isinstance(exc, UNSAFE):
        return error(PermanentAgencyError, f"malformed/unsafe answer refused ({type(exc).__name__}: {exc})")
    if isinstance(exc, MALFORMED):
        return error(PermanentAgencyError, f"malformed/unsafe answer: not well-formed XML ({exc})")
    if isinstance(exc, zeep_errors.TransportError):
        status = exc.status_code
        raw = exc.content
        if status and 300 <= status < 400:
            return error(PermanentAgencyError, f"HTTP {status}: redirects are not followed", status_code=status, raw=raw)
        if status and status >= 500:
            return error(TransientAgencyError, f"HTTP {status} from the agency", status_code=status, raw=raw)
        if status and 400 <= status < 500:
            hint = " (credentials refused)" if status in (401, 403) else ""
            return error(PermanentAgencyError, f"HTTP {status}{hint}", status_code=status, raw=raw)
        return error(PermanentAgencyError, f"malformed/unsafe answer: {str(exc).splitlines()[0]}",
                     status_code=status, raw=raw)
    if isinstance(exc, requests.exceptions.HTTPError):  # loading a WSDL: raise_for_status
        status = exc.response.status_code if exc.response is not None else None
        cls = TransientAgencyError if status and status >= 500 else PermanentAgencyError
        return error(cls, f"HTTP {status}", status_code=status)
    if isinstance(exc, requests.exceptions.RequestException):
        return agency_error(exc, agency=agency, request_id=request_id, where=where, timeout=timeout)
    if isinstance(exc, (zeep_errors.ValidationError, TypeError)):
        return error(PermanentAgencyError, f"the request does not fit the WSDL: {exc}")
    if isinstance(exc, LookupError):
        return error(PermanentAgencyError, str(exc))
    if isinstance(exc, OSError):
        return error(PermanentAgencyError, f"cannot read: {exc}")
    if isinstance(exc, zeep_errors.Error):
        return error(PermanentAgencyError, f"{type(exc).__name__}: {exc}")
    return error(PermanentAgencyError, f"unexpected {type(exc).__name__}: {exc}")
