"""WSGI middleware in front of spyne: X-Road header echo, DTD refusal, bad-answer knob.

A real X-Road security server hands the provider's answer back with the request's X-Road
headers (client, service, id, userId, issue, protocolVersion) copied into the response
header; we do the same. The ``bad_answer`` knob spoils successful answers on purpose so
adapter tests can prove they survive hostile or broken agencies.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

from lxml import etree

from .agency import Agency
from .auth import safe_parser
from .front_desk import SOAP_ENV, read_body, soap_fault
from .soap_common import XROAD_ID

XROAD_NS = "http://x-road.eu/xsd/xroad.xsd"
PLACEHOLDER = "SANDBOX-ENTITY-PLACEHOLDER"
# Which result field the "wrong_shape" answer leaves out.
KEY_FIELDS = {"tax-office": "npwp", "social-security": "ticket"}


def create_app(agency: Agency) -> SoapDesk:
    if agency.id == "tax-office":
        from .tax_office import create_app as create_service
    else:
        from .social_security import create_app as create_service
    return SoapDesk(agency, create_service(agency))


class SoapDesk:
    """Wraps a spyne WsgiApplication; see the module docstring."""

    def __init__(self, agency: Agency, spyne_app: Any) -> None:
        self.agency = agency
        self.spyne_app = spyne_app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable
    ) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return self.spyne_app(environ, start_response)  # WSDL and friends
        body = read_body(environ)
        if b"<!DOCTYPE" in body[:2048].upper():
            return soap_fault("Client", "DTDs are not accepted")(
                environ, start_response
            )
        # Behind X-Road the request id travels in the `id` header, not in the body.
        environ[XROAD_ID] = xroad_id(body)
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list, exc_info: Any = None) -> Callable:
            captured.update(status=status, headers=headers)
            return lambda data: None

        chunks = self.spyne_app(environ, capture)
        try:
            answer = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        answer = echo_xroad_headers(body, answer)
        bad = self.agency.knobs.get("bad_answer")
        if bad and captured["status"].startswith("200"):
            answer = spoil(bad, answer, KEY_FIELDS[self.agency.id])
        headers = [
            (k, v) for k, v in captured["headers"] if k.lower() != "content-length"
        ]
        headers.append(("Content-Length", str(len(answer))))
        start_response(captured["status"], headers)
        return [answer]


def xroad_id(request: bytes) -> str | None:
    """The X-Road ``id`` header of a request, or None."""
    try:
        root = etree.fromstring(request, safe_parser())
    except etree.XMLSyntaxError:
        return None
    found = root.find(f"{{{SOAP_ENV}}}Header/{{{XROAD_NS}}}id")
    return found.text if found is not None else None


def echo_xroad_headers(request: bytes, answer: bytes) -> bytes:
    """Copy the request's X-Road header elements into the answer's SOAP Header."""
    try:
        request_root = etree.fromstring(request, safe_parser())
    except etree.XMLSyntaxError:
        return answer
    header = request_root.find(f"{{{SOAP_ENV}}}Header")
    xroad = (
        [child for child in header if _namespace(child) == XROAD_NS]
        if header is not None
        else []
    )
    if not xroad:
        return answer
    try:
        answer_root = etree.fromstring(answer, safe_parser())
    except etree.XMLSyntaxError:
        return answer
    answer_header = answer_root.find(f"{{{SOAP_ENV}}}Header")
    if answer_header is None:
        answer_header = etree.Element(f"{{{SOAP_ENV}}}Header")
        answer_root.insert(0, answer_header)
    for element in xroad:
        answer_header.append(copy.deepcopy(element))
    return etree.tostring(answer_root, xml_declaration=True, encoding="UTF-8")


def _namespace(element: Any) -> str | None:
    return etree.QName(element).namespace if isinstance(element.tag, str) else None


def spoil(kind: str, answer: bytes, key_field: str) -> bytes:
    """Turn a good SOAP answer into the kind of bad one the ``bad_answer`` knob names."""
    if kind == "malformed":
        return answer[: max(1, len(answer) // 2)]  # cut mid-document: not well-formed
    root = etree.fromstring(answer, safe_parser())
    body = root.find(f"{{{SOAP_ENV}}}Body")
    if kind == "wrong_shape":
        for element in body.iter():
            if (
                isinstance(element.tag, str)
                and etree.QName(element).localname == key_field
            ):
                element.getparent().remove(element)
                break
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    target = next(
        (
            e
            for e in body.iter()
            if isinstance(e.tag, str) and etree.QName(e).localname == key_field
        ),
        None,
    )
    if target is None:
        target = etree.SubElement(body[0] if len(body) else body, key_field)
    target.text = PLACEHOLDER
    text = etree.tostring(root, encoding="unicode")
    root_name = f"{root.prefix}:Envelope" if root.prefix else "Envelope"
    if kind == "xxe":
        doctype = f'<!DOCTYPE {root_name} [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        text = text.replace(PLACEHOLDER, "&xxe;")
    else:  # billion_laughs
        entities = ['<!ENTITY lol0 "lol">'] + [
            f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">'
            for i in range(1, 10)
        ]
        doctype = f"<!DOCTYPE {root_name} [{''.join(entities)}]>"
        text = text.replace(PLACEHOLDER, "&lol9;")
    return f"<?xml version='1.0' encoding='UTF-8'?>\n{doctype}\n{text}".encode()
