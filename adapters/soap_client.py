"""Building zeep clients safely: the guarded transport, the per-process WSDL cache, and the
choice of service and port.

A parsed WSDL is costly, so each (location, settings) pair is parsed once per process and
kept in ``_DOCUMENTS`` (lock-protected); every adapter builds its own light ``Client``
around the shared document with its own transport (auth, TLS) and plugins.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from zeep import Client, Settings
from zeep.transports import Transport
from zeep.wsdl import Document
from zeep.wsdl.bindings import Soap11Binding, Soap12Binding

from .deadlines import REAPER
from .egress import EgressPolicy, guard_session

# zeep's transport logs whole request bodies at DEBUG; ours go through the masking plugin.
_SILENT = logging.Logger("satupintu.soap.transport", level=logging.CRITICAL)  # noqa: LOG001 - deliberately detached

_DOCUMENTS: dict[tuple[Any, ...], Document] = {}
_DOCUMENTS_LOCK = threading.Lock()


class NoRedirectSession(requests.Session):
    """A session that never follows a redirect, whatever the caller (zeep) asks."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs["allow_redirects"] = False
        return super().request(method, url, *args, **kwargs)


class HostNotAllowed(Exception):
    """Raised when a WSDL, schema or SOAP address is on a host outside ``allowed_hosts``."""


def host_allowed(url: str, allowed: list[str] | None) -> bool:
    if not allowed or not urlsplit(url).scheme.startswith("http"):
        return True
    host = (urlsplit(url).hostname or "").lower()
    return any(host == a.lower() or (a.startswith(".") and host.endswith(a.lower())) for a in allowed)


class AnswerDeadline(requests.exceptions.ReadTimeout):
    """The SOAP answer was not complete within the call's total time (``timeouts.total``)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"answer not complete within {seconds:g} s (timeouts.total)")
        self.seconds = seconds


class AnswerTooLarge(Exception):
    """The SOAP answer is larger, once decoded, than ``options.max_answer_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"answer larger than {limit} bytes (options.max_answer_bytes)")
        self.limit = limit


_CHUNK = 8192  # read at a time: a gzip bomb inflates one chunk at most ~1,000-fold before the check


class GuardedTransport(Transport):
    """A zeep transport with explicit timeouts, no redirects, no unmasked logging, and
    (when ``allowed_hosts`` is set) no fetching of WSDL/XSD or posting outside those hosts.

    A SOAP call (``post``) has a total time, ``total_timeout`` (``adapters.deadlines``),
    besides the per-read one, and its answer is read at most ``max_bytes`` (decoded) far."""

    def __init__(self, *, connect_timeout: float, operation_timeout: float,
                 allowed_hosts: list[str] | None = None, session: requests.Session | None = None,
                 egress: EgressPolicy | None = None, total_timeout: float | None = None,
                 max_bytes: int | None = None, pool_size: int = 10) -> None:
        super().__init__(timeout=(connect_timeout, max(operation_timeout, 10.0)),
                         operation_timeout=(connect_timeout, operation_timeout),
                         session=session or NoRedirectSession())
        # Every connection (WSDL, XSD, SOAP call) is checked against the egress policy.
        # Connections kept per host: as many as calls may run at once, so that none is
        # opened for one call and thrown away after it ("connection pool is full").
        guard_session(self.session, egress or EgressPolicy.from_env(allowed_hosts or ()), pool_maxsize=pool_size)
        self.logger = _SILENT
        self.allowed_hosts = allowed_hosts
        self.total_timeout = total_timeout
        self.max_bytes = max_bytes

    def load(self, url: str) -> bytes:
        if url.startswith("file://"):
            url = urlsplit(url).path
        if not host_allowed(url, self.allowed_hosts):
            raise HostNotAllowed(f"{url} is not on an allowed host")
        return super().load(url)

    def post(self, address: str, message: Any, headers: Any) -> requests.Response:
        if not host_allowed(address, self.allowed_hosts):
            raise HostNotAllowed(f"{address} is not on an allowed host")
        if self.total_timeout is None:
            return self._post(address, message, headers)
        with REAPER.watch(self.total_timeout) as watch:
            try:
                response = self._post(address, message, headers)
            except Exception as exc:
                if watch.expired:  # the reaper cut the connection: that is why it broke
                    raise AnswerDeadline(watch.seconds) from exc
                raise
            if watch.expired and _ends_with_the_connection(response):
                # Read "whole" only because the reaper cut the connection that framed it.
                # (A body framed by its length or by chunks cut short raised above; one that
                # arrived whole just before the deadline is kept.)
                raise AnswerDeadline(watch.seconds)
            return response

    def _post(self, address: str, message: Any, headers: Any) -> requests.Response:
        """POST and read the answer whole (bounded), so that the deadline covers the body too."""
        response = self.session.post(address, data=message, headers=headers, timeout=self.operation_timeout,
                                     stream=True)
        try:
            limit = self.max_bytes
            declared = response.headers.get("Content-Length", "")
            if limit is not None and declared.isdigit() and int(declared) > limit:
                raise AnswerTooLarge(limit)
            chunks, size = [], 0
            for chunk in response.iter_content(_CHUNK):
                size += len(chunk)
                if limit is not None and size > limit:
                    raise AnswerTooLarge(limit)
                chunks.append(chunk)
            response._content = b"".join(chunks)  # as requests itself stores a body read whole
        except BaseException:
            response.close()
            raise
        return response


def _ends_with_the_connection(response: requests.Response) -> bool:
    """Whether the answer's body is framed by the connection closing (no length, not chunked)."""
    headers = response.headers
    return "Content-Length" not in headers and "chunked" not in headers.get("Transfer-Encoding", "").lower()


def safe_settings(strict: bool = True) -> Settings:
    """zeep settings that never expand entities, accept DTDs or fetch external references."""
    return Settings(strict=strict, xml_huge_tree=False, forbid_dtd=True, forbid_entities=True,
                    forbid_external=True, force_https=False)


def wsdl_location(wsdl: str, agency_file: str) -> str:
    """A relative WSDL path is relative to the agency file's folder."""
    if "://" in wsdl or Path(wsdl).is_absolute():
        return wsdl
    base = Path(agency_file).parent
    candidate = base / wsdl
    return str(candidate if candidate.exists() else Path(wsdl))


def load_document(location: str, transport: GuardedTransport, *, strict: bool) -> Document:
    """The parsed WSDL at ``location``, parsed once per process per settings."""
    key = (location, strict, tuple(transport.allowed_hosts or ()))
    document = _DOCUMENTS.get(key)
    if document is not None:
        return document
    with _DOCUMENTS_LOCK:
        document = _DOCUMENTS.get(key)
        if document is None:
            document = Document(location, transport, settings=safe_settings(strict))
            _DOCUMENTS[key] = document
        return document


def forget_documents() -> None:
    """Empty the WSDL cache (tests, or a reload after an agency changed its WSDL)."""
    with _DOCUMENTS_LOCK:
        _DOCUMENTS.clear()


def build_client(document: Document, transport: GuardedTransport, *, strict: bool, wsse: Any,
                 plugins: list[Any]) -> Client:
    return Client(document, transport=transport, wsse=wsse, plugins=plugins, settings=safe_settings(strict))


def choose_binding(document: Document, *, soap_version: str, service: str | None, port: str | None) -> Any:
    """The binding to call: the named service/port, else the first port speaking
    ``soap_version``, else the first port.  Raises LookupError naming what exists."""
    services = document.services
    if not services:
        raise LookupError("the WSDL defines no service")
    if service:
        if service not in services:
            raise LookupError(f"the WSDL has no service {service!r}; it has: {', '.join(services)}")
        chosen = services[service]
    else:
        chosen = next(iter(services.values()))
    ports = chosen.ports
    if port:
        if port not in ports:
            raise LookupError(f"service {chosen.name!r} has no port {port!r}; it has: {', '.join(ports)}")
        return ports[port].binding
    wanted = Soap12Binding if soap_version == "1.2" else Soap11Binding
    for candidate in ports.values():
        if isinstance(candidate.binding, wanted):
            return candidate.binding
    if not ports:
        raise LookupError(f"service {chosen.name!r} has no ports")
    return next(iter(ports.values())).binding
