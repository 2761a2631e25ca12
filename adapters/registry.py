"""Adapters by name: the built-in ones and those registered by third parties through the
``satupintu.adapters`` entry-point group (``name = package.module:AdapterClass``)."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from core.domain.errors import ConfigError

from .base import Adapter

ENTRY_POINT_GROUP = "satupintu.adapters"

# Built-ins are named by import path so that, say, a worker that only talks REST never
# imports zeep and lxml.
_BUILTIN = {
    "rest": "adapters.rest:RestAdapter",
    "soap": "adapters.soap:SoapAdapter",
}


def _load(target: str) -> type[Adapter]:
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise ConfigError(f"{target} is not an Adapter subclass")
    return cls


def available() -> dict[str, str]:
    """Every adapter name that can be used, with where it comes from."""
    names = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        names.setdefault(ep.name, ep.value)
    return names


def adapter_class(name: str, *, file: str | None = None) -> type[Adapter]:
    """The adapter class called ``name``; unknown names fail with the list of known ones."""
    names = available()
    target = names.get(name)
    if target is None:
        raise ConfigError(f"unknown adapter {name!r}; known adapters: {', '.join(sorted(names))}",
                          file=file, field="adapter")
    return _load(target)
