"""The quick check: a first pass over a bundle's data that says "plainly valid" without jsonschema.

jsonschema's ``iter_errors`` walks the schema through its keyword functions for every
document (~20 us for the bench service, ~140 us for business-startup); nearly every
submission is valid, and only an invalid one needs jsonschema's messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jsonschema

# ``quick_check(schema)`` compiles the keywords service schemas use (type, properties,
# required, additionalProperties, items, lengths and bounds, pattern, format, enum/const of
# strings) into plain Python.  It answers True only where jsonschema would find no error;
# for anything else -- an error, or a value it does not vouch for (a float that is an
# integer, an enum of numbers) -- it answers False and jsonschema decides and words every
# message.  A schema with any other keyword ($ref, allOf, patternProperties, ...) gets no
# quick check at all.  tests/unit/test_submit_quick_schema.py compares both with hypothesis.

_ANNOTATIONS = frozenset({"$schema", "$comment", "title", "description", "examples", "default", "deprecated",
                          "readOnly", "writeOnly"})
_QUICK_TYPES: dict[str, Callable[[Any], bool]] = {  # accepted here ⇒ jsonschema's is_type accepts it
    "object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str), "integer": lambda v: type(v) is int,
    "number": lambda v: type(v) is int or type(v) is float, "boolean": lambda v: v is True or v is False,
    "null": lambda v: v is None}


class _Unsupported(Exception):
    """Raised while compiling a quick check for a keyword or a value shape it does not handle."""


def quick_check(schema: Any, format_checker: jsonschema.FormatChecker) -> Callable[[Any], bool] | None:
    """A function that is True only for documents ``schema`` plainly accepts, or None (no quick check)."""
    try:
        return _quick_node(schema, format_checker, root=True)
    except (_Unsupported, re.error):
        return None


def _count(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise _Unsupported(value)
    return value


def _bound(value: Any) -> int | float:
    if type(value) not in (int, float):
        raise _Unsupported(value)
    return value


def _strings(values: Any) -> frozenset[str]:
    """The string members of an enum: a value equal to another member is left to jsonschema."""
    if not isinstance(values, list):
        raise _Unsupported(values)
    return frozenset(v for v in values if type(v) is str)


def _quick_node(node: Any, format_checker: jsonschema.FormatChecker, *, root: bool = False) -> Callable[[Any], bool]:
    if node is True or node is False:
        return lambda v, valid=node: valid
    if not isinstance(node, dict) or not root and "$schema" in node:  # a subschema's $schema switches dialect
        raise _Unsupported(node)
    checks: list[Callable[[Any], bool]] = []
    number_bounds = []
    for key, value in node.items():
        if key in _ANNOTATIONS or key.startswith("x-"):
            continue
        if key == "type":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not names or not all(n in _QUICK_TYPES for n in names):
                raise _Unsupported(value)
            tests = tuple(_QUICK_TYPES[n] for n in names)
            checks.append(tests[0] if len(tests) == 1 else lambda v, tests=tests: any(t(v) for t in tests))
        elif key == "properties":
            if not isinstance(value, dict):
                raise _Unsupported(value)
            checks.append(_properties_check(tuple((name, _quick_node(child, format_checker))
                                                  for name, child in value.items())))
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                raise _Unsupported(value)
            names = frozenset(value)
            checks.append(lambda v, names=names: not isinstance(v, dict) or names <= v.keys())
        elif key == "additionalProperties":
            if "patternProperties" in node:
                raise _Unsupported(key)
            known = frozenset(node.get("properties") or ())
            if value is False:
                checks.append(lambda v, known=known: not isinstance(v, dict) or v.keys() <= known)
            else:
                extra = _quick_node(value, format_checker)
                checks.append(lambda v, known=known, extra=extra: not isinstance(v, dict) or all(
                    extra(item) for k, item in v.items() if k not in known))
        elif key == "items":
            if "prefixItems" in node:
                raise _Unsupported(key)
            item = _quick_node(value, format_checker)
            checks.append(lambda v, item=item: not isinstance(v, list) or all(item(x) for x in v))
        elif key in ("minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength"):
            n, kind = _count(value), (list if key.endswith("Items") else dict if key.endswith("Properties") else str)
            if key.startswith("min"):
                checks.append(lambda v, n=n, kind=kind: not isinstance(v, kind) or len(v) >= n)
            else:
                checks.append(lambda v, n=n, kind=kind: not isinstance(v, kind) or len(v) <= n)
        elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            number_bounds.append((key, _bound(value)))
        elif key == "pattern":
            if not isinstance(value, str):
                raise _Unsupported(value)
            search = re.compile(value).search  # jsonschema: ``re.search(pattern, instance)``
            checks.append(lambda v, search=search: not isinstance(v, str) or search(v) is not None)
        elif key == "format":
            if not isinstance(value, str):
                raise _Unsupported(value)
            checks.append(lambda v, fmt=value: _conforms(format_checker, v, fmt))
        elif key == "enum":
            members = _strings(value)
            checks.append(lambda v, members=members: type(v) is str and v in members)
        elif key == "const":
            # A string equals only the same string (jsonschema's ``equal``); other constants are left to it.
            checks.append(lambda v, const=value: type(const) is str and type(v) is str and v == const)
        else:
            raise _Unsupported(key)
    if number_bounds:
        checks.append(_number_check(tuple(number_bounds)))
    checks_ = tuple(checks)

    def check(v: Any) -> bool:
        for c in checks_:
            if not c(v):
                return False
        return True
    return check


def _properties_check(children: tuple[tuple[str, Callable[[Any], bool]], ...]) -> Callable[[Any], bool]:
    missing = object()

    def check(v: Any) -> bool:
        if type(v) is dict:
            for name, child in children:  # jsonschema's ``properties``: each one present is checked
                value = v.get(name, missing)
                if value is not missing and not child(value):
                    return False
            return True
        return not isinstance(v, dict)  # a dict of another kind is left to jsonschema
    return check


def _number_check(bounds: tuple[tuple[str, int | float], ...]) -> Callable[[Any], bool]:
    """Bounds hold for an int or float (jsonschema's comparisons, so NaN compares as it does
    there); they do not apply to strings, objects, arrays, booleans and null; any other
    value is left to jsonschema."""
    def check(v: Any) -> bool:
        if type(v) is int or type(v) is float:
            for key, bound in bounds:
                if key == "minimum" and v < bound or key == "maximum" and v > bound \
                        or key == "exclusiveMinimum" and v <= bound or key == "exclusiveMaximum" and v >= bound:
                    return False
            return True
        return v is None or isinstance(v, str | dict | list | bool)
    return check


def _conforms(format_checker: jsonschema.FormatChecker, value: Any, fmt: str) -> bool:
    try:
        return format_checker.conforms(value, fmt)  # what the ``format`` keyword asks of the same checker
    except Exception:  # noqa: BLE001 - whatever a checker raises, jsonschema is the one to report it
        return False
