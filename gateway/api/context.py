"""What every view needs: settings, catalog, engine; and the calling client."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import current_app, g, request
from sqlalchemy import Engine

from .. import clients
from ..catalog import Catalog
from ..settings import Settings
from .problems import TYPES, Problem


@dataclass
class Context:
    settings: Settings
    catalog: Catalog
    engine: Engine


def ctx() -> Context:
    return current_app.extensions["satupintu"]


def current_client() -> clients.Client:
    return g.client


def _key_from_request() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get("satupintu_ops") if request.path.startswith("/ops") else None


def authenticate() -> clients.Client:
    key = _key_from_request()
    if not key:
        raise Problem(401, "Unauthorized", "send `Authorization: Bearer <api key>`", type=TYPES + "unauthorized",
                      headers={"WWW-Authenticate": 'Bearer realm="satupintu"'})
    with ctx().engine.connect().execution_options(readonly=True) as conn:
        client = clients.authenticate(conn, key)
    if client is None:
        raise Problem(401, "Unauthorized", "the API key is not valid or was revoked", type=TYPES + "unauthorized",
                      headers={"WWW-Authenticate": 'Bearer realm="satupintu", error="invalid_token"'})
    return client


def require(scope: str) -> Callable:
    """View decorator: a valid key with ``scope``; the client is then ``g.client``."""
    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            client = authenticate()
            if scope not in client.scopes:
                raise Problem(403, "Forbidden", f"this key lacks the {scope!r} scope", type=TYPES + "forbidden")
            g.client = client
            return view(*args, **kwargs)
        return wrapper
    return decorate
