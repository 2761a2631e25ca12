"""Building zeep clients safely: zeep's transport over the agency's one session, the
per-process WSDL cache, and the choice of service and port.

A parsed WSDL is costly, so each (location, settings) pair is parsed once per process and
kept in ``_DOCUMENTS`` (lock-protected); every adapter builds its own light ``Client``
around the shared document with its own transport (the agency session: egress policy,
total time, answer cap, auth, TLS; ``adapters.transport``) and plugins.
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

# zeep's transport logs whole request bodies at DEBUG; ours go through the masking plugin.
_SILENT = logging.Logger("satupintu.soap.transport", level=logging.CRITICAL)  # noqa: LOG001 - deliberately detached

_DOCUMENTS: dict[tuple[Any, ...], Document] = {}
_DOCUMENTS_LOCK = threading.Lock()


class AgencyTransport(Transport):
    """zeep's transport on an agency session, with explicit timeouts (zeep's operation
    timeout is None by default) and no unmasked logging; ``file://`` WSDLs are read from disk."""

    def __init__(self, session: requests.Session, *, connect_timeout: float, operation_timeout: float) -> None:
        super().__init__(timeout=(connect_timeout, max(operation_timeout, 10.0)),
                         operation_timeout=(connect_timeout, operation_timeout), session=session)
        self.logger = _SILENT

    def load(self, url: str) -> bytes:
        if url.startswith("file://"):
            url = urlsplit(url).path
        return super().load(url)


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


def load_document(location: str, transport: Transport, *, strict: bool, hosts: frozenset[str]) -> Document:
    """The parsed WSDL at ``location``, parsed once per process per settings and allowed hosts."""
    key = (location, strict, tuple(sorted(hosts)))
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


def build_client(document: Document, transport: Transport, *, strict: bool, wsse: Any,
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


def operation_names(binding: Any) -> set[str]:
    """The operations a binding's port type declares (zeep's public ``port_type.operations``)."""
    port_type = binding.port_type
    return set(port_type.operations) if port_type is not None else set()
