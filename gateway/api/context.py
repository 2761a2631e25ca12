"""What every view needs: settings, catalog, engine; and the calling client."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Request, current_app, g, request
from sqlalchemy import Engine

from core.model import Catalog
from core.settings import Settings

from .. import clients, sessions
from . import ratelimit
from .keycache import KeyCache
from .problems import TYPES, Problem


@dataclass
class Context:
    settings: Settings
    catalog: Catalog
    engine: Engine
    # This process's memory of verified keys and its leased rate-limit tokens.
    keys: KeyCache = field(default_factory=KeyCache)
    leases: ratelimit.Leases = field(default_factory=ratelimit.Leases)

    def lookup(self, key: str) -> clients.Client | None:
        """The store's client of ``key``: what the key cache asks when it does not remember one."""
        return _lookup(self.engine, key)


def ctx() -> Context:
    return current_app.extensions["satupintu"]


def current_client() -> clients.Client:
    return g.client


def _bearer(req: Request) -> str | None:
    scheme, _, token = req.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


SESSION_COOKIE = "satupintu_ops"


def authenticate(c: Context | None = None) -> clients.Client:
    """The client of a bearer key, or on the dashboard's pages of a live session cookie."""
    req = request
    operators = req.path.startswith("/ops")
    if c is None:
        c = ctx()
    key = _bearer(req)
    if key is None and operators and req.cookies.get(SESSION_COOKIE):
        with c.engine.begin() as conn:
            client = sessions.resume(conn, req.cookies[SESSION_COOKIE], c.settings)
        if client is None:
            raise Problem(401, "Unauthorized", "the session has ended: sign in again", type=TYPES + "unauthorized",
                          headers={"WWW-Authenticate": 'Bearer realm="satupintu"'})
        return client
    if not key:
        raise Problem(401, "Unauthorized", "send `Authorization: Bearer <api key>`", type=TYPES + "unauthorized",
                      headers={"WWW-Authenticate": 'Bearer realm="satupintu"'})
    # Operators' requests (the dashboard, /ops/api) are few: they look the key up every time,
    # so revoking an operator's key still ends their sessions at once (docs/security.md).
    seconds = 0 if operators else c.settings.key_cache_seconds
    client = c.keys.client(key, c.lookup, seconds=seconds)
    if client is None:
        raise Problem(401, "Unauthorized", "the API key is not valid or was revoked", type=TYPES + "unauthorized",
                      headers={"WWW-Authenticate": 'Bearer realm="satupintu", error="invalid_token"'})
    return client


def _lookup(engine: Engine, key: str) -> clients.Client | None:
    with engine.connect().execution_options(readonly=True) as conn:
        return clients.authenticate(conn, key)


def limit(client: clients.Client, c: Context | None = None) -> None:
    """429 when ``client`` has spent its rate limit (``SATUPINTU_RATE_LIMIT``), in every process."""
    if c is None:
        c = ctx()
    settings = c.settings
    if settings.rate_limit <= 0:
        return
    verdict = c.leases.spend(c.engine, client.id, rate=settings.rate_limit, burst=settings.rate_burst,
                             lease=settings.rate_lease_seconds)
    if not verdict.allowed:
        raise Problem(429, "Too Many Requests",
                      f"this client may make {settings.rate_limit:g} requests a second (bursts of "
                      f"{settings.rate_burst}); retry after {verdict.retry_after} s",
                      type=TYPES + "rate-limited", headers={"Retry-After": str(verdict.retry_after)})


def require(scope: str) -> Callable:
    """View decorator: a valid key with ``scope``, within its rate limit; the client is then ``g.client``."""
    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            c = current_app.extensions["satupintu"]  # ctx(), looked up once for both
            client = authenticate(c)
            limit(client, c)
            if scope not in client.scopes:
                raise Problem(403, "Forbidden", f"this key lacks the {scope!r} scope", type=TYPES + "forbidden")
            g.client = client
            return view(*args, **kwargs)
        wrapper.required_scope = scope  # type: ignore[attr-defined]  # read by the authorisation tests
        return wrapper
    return decorate
