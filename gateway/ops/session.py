"""The dashboard's session and its defences: the login cookie, same-origin checks, page headers.

The cookie (``HttpOnly``, ``SameSite=Strict``, ``Path=/ops``, ``Secure`` when
``SATUPINTU_BEHIND_TLS`` says the deployment is served over TLS, or the request came by
https) holds a session token; the session itself is in the store (``gateway/sessions.py``),
ended on logout, on the key's revocation and after idle time.  State-changing requests made with the
cookie must also come from our own pages: their ``Origin`` (or, failing that, their
``Referer``) must name this host.  Requests with ``Authorization: Bearer`` carry no
ambient credentials, so they need no such check.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Response, request

from ..api.context import ctx
from ..api.problems import TYPES, Problem

COOKIE = "satupintu_ops"

CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def _secure() -> bool:
    return ctx().settings.behind_tls or request.is_secure


def set_cookie(response: Response, token: str) -> None:
    response.set_cookie(COOKIE, token, max_age=int(ctx().settings.session_max_seconds), path="/ops", httponly=True,
                        samesite="Strict", secure=_secure())


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/ops", httponly=True, samesite="Strict", secure=_secure())


def uses_bearer() -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def same_origin() -> bool:
    """True when the request names this host in ``Origin``, or else in ``Referer``."""
    here = urlsplit(request.host_url).netloc.lower()
    origin = request.headers.get("Origin")
    if origin:
        return origin != "null" and urlsplit(origin).netloc.lower() == here
    referer = request.headers.get("Referer")
    return bool(referer) and urlsplit(referer).netloc.lower() == here


def require_same_origin() -> None:
    """For state-changing requests: refuse a cookie-authenticated one from another site."""
    if uses_bearer() or same_origin():
        return
    raise Problem(403, "Forbidden", "cross-site request refused: send it from the dashboard (same origin) "
                  "or with Authorization: Bearer", type=TYPES + "csrf")


def safe_next(target: str | None) -> str:
    """Where to go after login: a path of the dashboard, never another site."""
    if target and target.startswith("/ops") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ops/"


def secure_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if not request.path.startswith("/ops/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response
