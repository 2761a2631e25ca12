"""Request mappings: JMESPath expressions over ``{data, steps, application}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

from .errors import ConfigError, MappingError


class FieldPath:
    """A JMESPath expression that is only fields, ``data.company.name``, read straight from
    the dicts: most mappings are such paths, and the interpreter's tree walk cost several
    times the lookups (``tests/unit/test_mapping_paths.py`` holds it to jmespath's answers).

    As JMESPath does: a field of anything without ``.get`` (a list, a string, null) is null.
    """

    __slots__ = ("expression", "keys")

    def __init__(self, expression: str, keys: tuple[str, ...]):
        self.expression, self.keys = expression, keys

    def search(self, value: Any) -> Any:
        try:
            for key in self.keys:
                value = value.get(key)
        except AttributeError:
            return None
        return value

    def __repr__(self) -> str:
        return f"FieldPath({self.expression!r})"


def _field_keys(node: dict[str, Any]) -> list[str] | None:
    """The keys of a parsed expression made only of fields and subexpressions, else None."""
    if node["type"] == "field":
        return [node["value"]]
    if node["type"] != "subexpression":
        return None
    keys: list[str] = []
    for child in node["children"]:
        child_keys = _field_keys(child)
        if child_keys is None:
            return None
        keys.extend(child_keys)
    return keys


def compile_expression(expression: str) -> Any:
    """``expression`` ready to ``search``: a ``FieldPath`` where it is only fields, else
    jmespath's own.  Raises ``JMESPathError`` for a bad expression, as ``jmespath.compile``."""
    parsed = jmespath.compile(expression)
    keys = _field_keys(parsed.parsed)
    return parsed if keys is None else FieldPath(expression, tuple(keys))


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
