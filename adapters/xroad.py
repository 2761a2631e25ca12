"""X-Road message protocol 4.0 (SOAP) and the X-Road REST protocol, for agencies behind a
security server (``xroad:`` section of an agency file).

SOAP: the ``client``, ``service``, ``id``, ``userId``, ``issue`` and ``protocolVersion``
headers, and a check that the answer echoes ``id``, ``client`` and ``service``.  REST: the
``/r1/...`` URL on the security server and the ``X-Road-*`` headers.  Errors raised by
security servers (``Server.ClientProxy.*``, ``Server.ServerProxy.*``, ``Client.*``) become
failures naming the X-Road error type; network-ish ones are transient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from lxml import etree

from core.domain.errors import (
    AgencyError,
    ConfigError,
    PermanentAgencyError,
    TransientAgencyError,
)
from core.masking import raw_excerpt

XROAD_NS = "http://x-road.eu/xsd/xroad.xsd"
ID_NS = "http://x-road.eu/xsd/identifiers"
PROTOCOL_VERSION = "4.0"

_MEMBER = {"instance": "xRoadInstance", "member_class": "memberClass", "member_code": "memberCode",
           "subsystem_code": "subsystemCode"}
_ID_FIELDS = {"type": "string", "minLength": 1}

XROAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["client", "service", "security_server"],
    "properties": {
        "client": {"type": "object", "additionalProperties": False, "required": list(_MEMBER),
                   "properties": {k: _ID_FIELDS for k in _MEMBER}},
        "service": {"type": "object", "additionalProperties": False, "required": list(_MEMBER),
                    "properties": {**{k: _ID_FIELDS for k in _MEMBER}, "service_version": _ID_FIELDS}},
        "user_id": {"type": "string"},
        "security_server": {"type": "string", "minLength": 1},
    },
}

# X-Road error types (the part after Server.ClientProxy. / Server.ServerProxy.) that a
# retry may cure: the network, a provider that failed, stale global configuration.
TRANSIENT_MARKERS = ("NetworkError", "Timeout", "ServiceFailed", "OutdatedGlobalConf",
                     "ServiceUnavailable", "IOError", "ConnectionRefused")


@dataclass(frozen=True)
class Member:
    instance: str
    member_class: str
    member_code: str
    subsystem_code: str

    @classmethod
    def parse(cls, section: dict[str, Any], where: str) -> Member:
        missing = [k for k in _MEMBER if not section.get(k)]
        if missing:
            raise ConfigError(f"missing {', '.join(missing)}", field=where)
        return cls(*(str(section[k]) for k in _MEMBER))

    @property
    def path(self) -> str:
        """``INSTANCE/CLASS/MEMBER/SUBSYSTEM``, each part URL-quoted."""
        return "/".join(quote(p, safe="") for p in
                        (self.instance, self.member_class, self.member_code, self.subsystem_code))


@dataclass(frozen=True)
class XRoad:
    """The ``xroad:`` section of one agency."""

    client: Member
    service: Member
    service_version: str | None
    user_id: str
    security_server: str

    @classmethod
    def from_agency(cls, agency: Any) -> XRoad | None:
        section = agency.xroad
        if not section:
            return None
        if not section.get("security_server"):
            raise ConfigError("security_server is required", file=agency.file, field="xroad.security_server")
        return cls(client=Member.parse(section.get("client") or {}, "xroad.client"),
                   service=Member.parse(section.get("service") or {}, "xroad.service"),
                   service_version=(section.get("service") or {}).get("service_version"),
                   user_id=str(section.get("user_id", "")),
                   security_server=str(section["security_server"]).rstrip("/"))

    # -- REST ------------------------------------------------------------------------

    def rest_url(self, service_code: str, path: str) -> str:
        """``{security_server}/r1/{service member}/{serviceCode}{path}``."""
        code = quote(service_code, safe="")
        if self.service_version:
            code += "." + quote(self.service_version, safe="")
        if path and not path.startswith("/"):
            path = "/" + path
        return f"{self.security_server}/r1/{self.service.path}/{code}{path}"

    def rest_headers(self, request_id: str, issue: str) -> dict[str, str]:
        headers = {"X-Road-Client": self.client.path, "X-Road-Id": request_id, "X-Road-Issue": issue}
        if self.user_id:
            headers["X-Road-UserId"] = self.user_id
        return headers

    # -- SOAP ------------------------------------------------------------------------

    def soap_headers(self, service_code: str, request_id: str, issue: str) -> list[etree._Element]:
        """The X-Road 4.0 SOAP header elements for one call."""
        def member(tag: str, who: Member, object_type: str, code: str | None = None,
                   version: str | None = None) -> etree._Element:
            element = etree.Element(f"{{{XROAD_NS}}}{tag}", nsmap={"xrd": XROAD_NS, "id": ID_NS})
            element.set(f"{{{ID_NS}}}objectType", object_type)
            for attr, name in _MEMBER.items():
                etree.SubElement(element, f"{{{ID_NS}}}{name}").text = getattr(who, attr)
            if code is not None:
                etree.SubElement(element, f"{{{ID_NS}}}serviceCode").text = code
            if version:
                etree.SubElement(element, f"{{{ID_NS}}}serviceVersion").text = version
            return element

        def simple(tag: str, text: str) -> etree._Element:
            element = etree.Element(f"{{{XROAD_NS}}}{tag}", nsmap={"xrd": XROAD_NS})
            element.text = text
            return element

        headers = [member("client", self.client, "SUBSYSTEM"),
                   member("service", self.service, "SERVICE", service_code, self.service_version),
                   simple("id", request_id)]
        if self.user_id:
            headers.append(simple("userId", self.user_id))
        headers += [simple("issue", issue), simple("protocolVersion", PROTOCOL_VERSION)]
        return headers

    def check_echo(self, envelope: etree._Element | None, service_code: str, request_id: str, *,
                   agency: str) -> None:
        """The answer must echo our ``id``, ``client`` and ``service`` headers."""
        def fail(message: str) -> PermanentAgencyError:
            raw = etree.tostring(envelope, encoding="unicode") if envelope is not None else None
            return PermanentAgencyError(f"agency {agency}: X-Road answer {message}", agency=agency,
                                        request_id=request_id, raw=raw_excerpt(raw))

        if envelope is None:
            raise fail("could not be read")
        header = envelope.find("{*}Header")
        if header is None:
            raise fail("has no SOAP header (X-Road requires the request headers echoed)")
        echoed_id = header.findtext(f"{{{XROAD_NS}}}id")
        if echoed_id != request_id:
            raise fail(f"echoes id {echoed_id!r}, expected {request_id!r}")
        for tag, who, code in (("client", self.client, None), ("service", self.service, service_code)):
            element = header.find(f"{{{XROAD_NS}}}{tag}")
            if element is None:
                raise fail(f"does not echo the {tag} header")
            got = [element.findtext(f"{{{ID_NS}}}{name}") for name in _MEMBER.values()]
            want = [getattr(who, attr) for attr in _MEMBER]
            if code is not None:
                got.append(element.findtext(f"{{{ID_NS}}}serviceCode"))
                want.append(code)
            if got != want:
                raise fail(f"echoes {tag} {'/'.join(map(str, got))}, expected {'/'.join(want)}")


def is_xroad_error_type(code: str | None) -> bool:
    """Whether a SOAP faultcode or REST error type comes from an X-Road security server."""
    if not code:
        return False
    local = code.rpartition(":")[2] if ":" in code.split(".")[0] else code
    return local.startswith(("Server.ClientProxy", "Server.ServerProxy", "Client."))


def xroad_error(code: str, message: str | None, *, agency: str, request_id: str,
                status_code: int | None = None, raw: str | bytes | None = None) -> AgencyError:
    """A failure reported by a security server, transient when it is network-ish."""
    local = code.rpartition(":")[2] if ":" in code.split(".")[0] else code
    transient = local.startswith(("Server.ClientProxy", "Server.ServerProxy")) and any(
        marker in local for marker in TRANSIENT_MARKERS)
    cls = TransientAgencyError if transient else PermanentAgencyError
    text = f"agency {agency}: X-Road error {local}"
    if message:
        text += f": {message}"
    return cls(text, agency=agency, request_id=request_id, status_code=status_code, raw=raw_excerpt(raw))


def rest_error(headers: Any, answer: Any, *, agency: str, request_id: str, status_code: int,
               raw: str | bytes | None) -> AgencyError | None:
    """The failure an X-Road REST error answer means (header ``X-Road-Error`` or a JSON
    ``{"type", "message", "detail"}`` with an X-Road type), or None if it is not one."""
    header = headers.get("X-Road-Error") if headers is not None else None
    kind = answer.get("type") if isinstance(answer, dict) else None
    if not header and not is_xroad_error_type(kind if isinstance(kind, str) else None):
        return None
    code = str(kind or header)
    message = answer.get("message") if isinstance(answer, dict) else None
    detail = answer.get("detail") if isinstance(answer, dict) else None
    text = " — ".join(str(part) for part in (message, detail) if part)
    return xroad_error(code, text or None, agency=agency, request_id=request_id, status_code=status_code, raw=raw)
