"""Credential checks for the ``auth`` knob: bearer, basic, API key, HMAC and WS-Security."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any

from lxml import etree

SIGNATURE_TOLERANCE = 300  # seconds either side of now
WSSE_NS = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
)
WSU_NS = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
)
DIGEST_TYPE = "#PasswordDigest"


def safe_parser() -> etree.XMLParser:
    """An lxml parser that never fetches or expands external things."""
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )


def check(
    auth: dict[str, Any] | None, environ: dict[str, Any], body: bytes
) -> str | None:
    """Return None if the request carries the credentials ``auth`` asks for, else why not."""
    if not auth:
        return None
    kind = auth["type"]
    if kind == "bearer":
        return _same(environ.get("HTTP_AUTHORIZATION", ""), f"Bearer {auth['token']}")
    if kind == "basic":
        return _basic(auth, environ.get("HTTP_AUTHORIZATION", ""))
    if kind == "api_key":
        key = "HTTP_" + auth["header"].upper().replace("-", "_")
        return _same(environ.get(key, ""), auth["value"])
    if kind == "hmac":
        message = b".".join(
            [
                environ.get("REQUEST_METHOD", "").encode(),
                environ.get("PATH_INFO", "").encode(),
                body,
            ]
        )
        return verify_signature(
            auth["secret"], environ.get("HTTP_X_SIGNATURE", ""), message
        )
    if kind == "wsse":
        if environ.get("REQUEST_METHOD") != "POST":
            return None  # fetching the WSDL carries no envelope to put a token in
        return _wsse(auth, body)
    return f"unsupported auth type {kind!r}"


def _same(given: str, expected: str) -> str | None:
    return (
        None
        if hmac.compare_digest(given.encode(), expected.encode())
        else "bad credentials"
    )


def _basic(auth: dict[str, Any], header: str) -> str | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return "missing basic credentials"
    try:
        user, _, password = (
            base64.b64decode(encoded, validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return "malformed basic credentials"
    ok = hmac.compare_digest(
        user.encode(), auth["username"].encode()
    ) & hmac.compare_digest(password.encode(), auth["password"].encode())
    return None if ok else "bad credentials"


def sign(secret: str, message: bytes, timestamp: int | None = None) -> str:
    """The signature header value ``t=<unix>,v1=<hex hmac-sha256(secret, "<t>." + message)>``."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(
        secret.encode(), f"{t}.".encode() + message, hashlib.sha256
    ).hexdigest()
    return f"t={t},v1={digest}"


def verify_signature(secret: str, header: str, message: bytes) -> str | None:
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        t = int(parts.get("t", ""))
    except ValueError:
        return "missing or malformed signature"
    if abs(time.time() - t) > SIGNATURE_TOLERANCE:
        return "signature timestamp outside the allowed window"
    expected = sign(secret, message, t).split("v1=", 1)[1]
    return (
        None if hmac.compare_digest(parts.get("v1", ""), expected) else "bad signature"
    )


def _wsse(auth: dict[str, Any], body: bytes) -> str | None:
    try:
        root = etree.fromstring(body, safe_parser())
    except etree.XMLSyntaxError:
        return "envelope is not well-formed XML"
    token = root.find(f".//{{{WSSE_NS}}}Security/{{{WSSE_NS}}}UsernameToken")
    if token is None:
        return "no WS-Security UsernameToken"
    user = token.findtext(f"{{{WSSE_NS}}}Username") or ""
    password_el = token.find(f"{{{WSSE_NS}}}Password")
    if password_el is None or not hmac.compare_digest(
        user.encode(), auth["username"].encode()
    ):
        return "bad credentials"
    given = (password_el.text or "").strip()
    if not password_el.get("Type", "").endswith(DIGEST_TYPE):
        return _same(given, auth["password"])
    nonce_text = token.findtext(f"{{{WSSE_NS}}}Nonce") or ""
    created = (token.findtext(f"{{{WSU_NS}}}Created") or "").strip()
    try:
        nonce = base64.b64decode(nonce_text.strip(), validate=True)
        when = datetime.fromisoformat(created)  # 3.11 reads a trailing Z
    except (binascii.Error, ValueError):
        return "malformed nonce or created time"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if abs((datetime.now(UTC) - when).total_seconds()) > SIGNATURE_TOLERANCE:
        return "UsernameToken created time outside the allowed window"
    digest = hashlib.sha1(nonce + created.encode() + auth["password"].encode()).digest()
    return _same(given, base64.b64encode(digest).decode())
