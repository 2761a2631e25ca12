"""zeep plugins used by the SOAP adapter: cross-cutting work kept out of ``soap.py``.

- ``MaskingLogger`` logs every envelope at DEBUG on ``satupintu.soap`` with personal data
  masked (named elements blanked, NIKs shortened to ``3171********0123``).
- ``HeaderAdder`` adds HTTP headers and SOAP header elements: static ones from config and,
  per call, those the adapter sets with ``call_headers(...)`` (correlation headers, the
  request id, X-Road headers).  Per-call values live in a thread-local, since one zeep
  ``Client`` is shared by the worker's threads and plugins run in the calling thread.
- ``AnswerCapture`` keeps the last answer envelope of this thread, so the adapter can check
  what zeep does not hand back (the X-Road header echo).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from lxml import etree
from zeep import Plugin

from core.masking import PERSONAL_FIELDS, mask_nik

SOAP_LOGGER = logging.getLogger("satupintu.soap")
_local = threading.local()


def masked_envelope(envelope: etree._Element, names: Iterable[str] = PERSONAL_FIELDS) -> str:
    """The envelope as text, with personal elements blanked and NIKs masked."""
    wanted = {n.lower() for n in names}
    clone = copy.deepcopy(envelope)
    for element in clone.iter():
        if isinstance(element.tag, str) and etree.QName(element).localname.lower() in wanted and element.text:
            element.text = "***"
    return mask_nik(etree.tostring(clone, encoding="unicode"))


class MaskingLogger(Plugin):
    """Logs request and answer envelopes at DEBUG, masked."""

    def __init__(self, names: Iterable[str] = PERSONAL_FIELDS, logger: logging.Logger = SOAP_LOGGER) -> None:
        self.names = frozenset(names)
        self.logger = logger

    def egress(self, envelope: Any, http_headers: dict[str, str], operation: Any, binding_options: Any) -> Any:
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("SOAP request %s to %s:\n%s", getattr(operation, "name", "?"),
                              (binding_options or {}).get("address"), masked_envelope(envelope, self.names))
        return envelope, http_headers

    def ingress(self, envelope: Any, http_headers: Any, operation: Any) -> Any:
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("SOAP answer to %s:\n%s", getattr(operation, "name", "?"),
                              masked_envelope(envelope, self.names))
        return envelope, http_headers


@contextlib.contextmanager
def call_headers(http: dict[str, str] | None = None, soap: list[etree._Element] | None = None) -> Iterator[None]:
    """HTTP headers and SOAP header elements for the calls made in this block, this thread."""
    previous = getattr(_local, "headers", None)
    _local.headers = (dict(http or {}), list(soap or []))
    try:
        yield
    finally:
        _local.headers = previous


class HeaderAdder(Plugin):
    """Adds static headers (from config) and the per-call ones of ``call_headers``."""

    def __init__(self, http: dict[str, str] | None = None, soap: list[etree._Element] | None = None) -> None:
        self.http = dict(http or {})
        self.soap = list(soap or [])

    def egress(self, envelope: Any, http_headers: dict[str, str], operation: Any, binding_options: Any) -> Any:
        call_http, call_soap = getattr(_local, "headers", None) or ({}, [])
        for name, value in {**self.http, **call_http}.items():
            if name.lower() not in ("content-type", "soapaction", "content-length"):
                http_headers[name] = value
        elements = self.soap + call_soap
        if elements:
            header = envelope.find("{*}Header")
            if header is None:
                namespace = etree.QName(envelope).namespace
                header = etree.Element(f"{{{namespace}}}Header")
                envelope.insert(0, header)
            for element in elements:
                header.append(copy.deepcopy(element))
        return envelope, http_headers


class AnswerCapture(Plugin):
    """Remembers the last answer envelope received by this thread."""

    def egress(self, envelope: Any, http_headers: Any, operation: Any, binding_options: Any) -> Any:
        _local.answer = None
        return envelope, http_headers

    def ingress(self, envelope: Any, http_headers: Any, operation: Any) -> Any:
        _local.answer = envelope
        return envelope, http_headers

    @staticmethod
    def last() -> etree._Element | None:
        return getattr(_local, "answer", None)
