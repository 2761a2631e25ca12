"""How adapters prove who we are to an agency: the ``auth:`` section of an agency file.

``none``; ``bearer`` {token}; ``basic`` {username, password}; ``api_key`` {header, value};
``hmac`` {secret, header}; ``mtls`` {cert, key, ca}; ``wsse`` {username, password, digest}
(SOAP only).  Secrets take ``env:NAME`` / ``file:PATH`` (``gateway.catalog.resolve_secret``)
and are read when the adapter builds its session, never at import.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase, HTTPBasicAuth

from core.domain.errors import ConfigError
from core.model import resolve_secret

AUTH_FIELDS: dict[str, dict[str, bool]] = {  # type -> {field: required}
    "none": {},
    "bearer": {"token": True},
    "basic": {"username": True, "password": True},
    "api_key": {"header": False, "value": True},
    "hmac": {"secret": True, "header": False},
    "mtls": {"cert": True, "key": True, "ca": False},
    "wsse": {"username": True, "password": True, "digest": False},
}


def auth_problems(auth: dict[str, Any], *, supported: set[str]) -> list[str]:
    """What is wrong with an ``auth:`` section for an adapter supporting ``supported`` types."""
    kind = auth.get("type", "none")
    if kind not in supported:
        return [f"auth.type: {kind!r} is not supported by this adapter; use one of {', '.join(sorted(supported))}"]
    fields = AUTH_FIELDS[kind]
    problems = [f"auth.{name}: required for auth type {kind!r}" for name, required in fields.items()
                if required and name not in auth]
    problems += [f"auth.{name}: unknown field for auth type {kind!r}; known: {', '.join(sorted(fields)) or '(none)'}"
                 for name in auth if name != "type" and name not in fields]
    return problems


class BearerAuth(AuthBase):
    """``Authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r


class ApiKeyAuth(AuthBase):
    """A static key in a header of the agency's choosing (default ``X-API-Key``)."""

    def __init__(self, header: str, value: str) -> None:
        self.header, self.value = header, value

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers[self.header] = self.value
        return r


def hmac_signature(secret: str, method: str, path: str, body: bytes, timestamp: int) -> str:
    """``t=<unix>,v1=<hex hmac-sha256(secret, "<t>.<METHOD>.<path>.<body>")>``."""
    message = f"{timestamp}.{method.upper()}.{path}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class HmacAuth(AuthBase):
    """Signs method, path (without the query string) and body with a shared secret."""

    def __init__(self, secret: str, header: str = "X-Signature", clock: Any = time.time) -> None:
        self.secret, self.header, self.clock = secret, header, clock

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        path = urlsplit(r.url or "").path or "/"
        r.headers[self.header] = hmac_signature(self.secret, r.method or "GET", path, body, int(self.clock()))
        return r


def _secret(auth: dict[str, Any], name: str) -> str:
    if name not in auth:
        raise ConfigError(f"auth type {auth.get('type')!r} needs field {name!r}", field=f"auth.{name}")
    return resolve_secret(str(auth[name]))


def requests_auth(auth: dict[str, Any]) -> AuthBase | None:
    """The ``requests`` auth for an ``auth:`` section (None for none, mtls and wsse)."""
    kind = auth.get("type", "none")
    if kind == "bearer":
        return BearerAuth(_secret(auth, "token"))
    if kind == "basic":
        return HTTPBasicAuth(_secret(auth, "username"), _secret(auth, "password"))
    if kind == "api_key":
        return ApiKeyAuth(str(auth.get("header", "X-API-Key")), _secret(auth, "value"))
    if kind == "hmac":
        return HmacAuth(_secret(auth, "secret"), str(auth.get("header", "X-Signature")))
    return None


def tls_settings(auth: dict[str, Any], verify: bool | str | None) -> tuple[bool | str, tuple[str, str] | None]:
    """``(verify, cert)`` as ``requests`` takes them: server verification (the ``verify`` option,
    a CA bundle path or true; an mTLS ``ca`` wins) and the mTLS client certificate and key."""
    cert = None
    if verify is None:
        verify = True
    if auth.get("type") == "mtls":
        cert = (str(auth["cert"]), str(auth["key"]))
        if auth.get("ca"):
            verify = str(auth["ca"])
    return verify, cert


def wsse_token(auth: dict[str, Any]) -> Any:
    """A zeep WS-Security ``UsernameToken`` (text or digest) for ``auth: {type: wsse}``."""
    # Imported here: REST-only workers never load zeep.
    from zeep.wsse.username import UsernameToken

    return UsernameToken(_secret(auth, "username"), _secret(auth, "password"),
                         use_digest=bool(auth.get("digest", False)))
