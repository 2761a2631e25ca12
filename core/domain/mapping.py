"""Request mappings: JMESPath expressions over ``{data, steps, application}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

from .errors import ConfigError, MappingError


def compile_expression(expression: str) -> Any:
    """``expression`` ready to ``search`` (``jmespath.compile``); ``JMESPathError`` when it is bad."""
    return jmespath.compile(expression)


def compile_mapping(mapping: Mapping[str, str], *, file: str | None = None, field: str = "request") -> dict[str, Any]:
    """Compile ``{field: expression}``; a bad expression is a ``ConfigError`` naming the field."""
    compiled = {}
    for name, expression in mapping.items():
        try:
            compiled[name] = compile_expression(expression)
        except JMESPathError as exc:
            raise ConfigError(f"bad JMESPath expression {expression!r}: {exc}", file=file,
                              field=f"{field}.{name}") from exc
    return compiled


def apply_mapping(compiled: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate each expression against ``context``; fields that evaluate to null are left out."""
    result = {}
    for name, expression in compiled.items():
        try:
            value = expression.search(context)
        except JMESPathError as exc:
            raise MappingError(f"mapping of field {name!r} failed: {exc}", field=name) from exc
        if value is not None:
            result[name] = value
    return result
