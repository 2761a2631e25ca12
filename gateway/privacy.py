"""Personal data, as the service schemas declare it: fields marked ``"x-pii": true``.

The full value goes only into the request sent to the agency.  Everything a person
other than the agency reads (history, event details, dead-letter details, logs, ops
views) shows it masked: a 16-digit NIK keeps its first and last four digits
(``3171********0123``), any other string its first and last character (``S*********u``).

Two ways to mask: ``mask_document`` walks a bundle's data with its schema; and because
agencies echo personal data back under names of their own (``owner_nik``,
``raw_answer``), ``pii_values`` collects the application's actual values and
``redact`` replaces them wherever they appear in any JSON-like value.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

Path = tuple[str, ...]  # object keys; "*" stands for every item of an array
_NIK = re.compile(r"^\d{16}$")
_MIN_REDACT = 3  # shorter values are not searched for in free text (they would mask everything)


def mask_value(value: Any) -> Any:
    """``3171012345670123`` → ``3171********0123``; ``Siti`` → ``S**i``; non-strings → ``***``."""
    if value is None:
        return None
    if not isinstance(value, str):
        return "***"
    if _NIK.match(value):
        return value[:4] + "*" * 8 + value[-4:]
    if len(value) <= 2:
        return "*" * len(value)
    return value[0] + "*" * (len(value) - 2) + value[-1]


def pii_paths(schema: dict[str, Any]) -> list[Path]:
    """The paths of every ``x-pii`` field of ``schema`` (local ``$ref``s, ``allOf``/``anyOf``/``oneOf``
    and ``items`` followed)."""
    found: list[Path] = []
    _walk(schema, schema, (), found, depth=0)
    return sorted(set(found))


def _walk(node: Any, root: dict[str, Any], path: Path, found: list[Path], depth: int) -> None:
    if not isinstance(node, dict) or depth > 32:
        return
    if node.get("x-pii") is True:
        found.append(path)
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target, dict) else {}
        _walk(target, root, path, found, depth + 1)
    for key, child in (node.get("properties") or {}).items():
        _walk(child, root, (*path, key), found, depth + 1)
    for keyword in ("items", "additionalProperties"):
        child = node.get(keyword)
        if isinstance(child, dict):
            _walk(child, root, (*path, "*"), found, depth + 1)
    for keyword in ("allOf", "anyOf", "oneOf"):
        for child in node.get(keyword) or ():
            _walk(child, root, path, found, depth + 1)


def _at(doc: Any, path: Path) -> Iterable[tuple[Any, Any]]:
    """Every (container, key) that ``path`` reaches in ``doc``."""
    if not path:
        return
    head, rest = path[0], path[1:]
    if head == "*":
        keys: Iterable[Any] = range(len(doc)) if isinstance(doc, list) else list(doc) if isinstance(doc, dict) else ()
    else:
        keys = [head] if isinstance(doc, dict) and head in doc else []
    for key in keys:
        if rest:
            yield from _at(doc[key], rest)
        else:
            yield doc, key


def mask_document(doc: Any, schema: dict[str, Any]) -> Any:
    """A copy of ``doc`` with every ``x-pii`` field of ``schema`` masked."""
    out = copy.deepcopy(doc)
    for path in pii_paths(schema):
        for container, key in _at(out, path):
            container[key] = mask_value(container[key])
    return out


def pii_values(doc: Any, schema: dict[str, Any]) -> set[str]:
    """The actual personal values in ``doc`` (as strings), to find them wherever they travel."""
    values: set[str] = set()
    for path in pii_paths(schema):
        for container, key in _at(doc, path):
            value = container[key]
            if isinstance(value, str | int) and not isinstance(value, bool) and len(str(value)) >= _MIN_REDACT:
                values.add(str(value))
    return values


def redact(value: Any, secrets: set[str]) -> Any:
    """A copy of ``value`` (JSON-like) with each of ``secrets`` masked wherever it occurs,
    as a whole value or inside a longer string."""
    if not secrets:
        return value
    ordered = sorted(secrets, key=len, reverse=True)  # a NIK before a name that is part of it
    pattern = re.compile("|".join(re.escape(s) for s in ordered))
    return _redact(value, pattern)


def _redact(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(lambda m: mask_value(m.group(0)), value)
    if isinstance(value, dict):
        return {k: _redact(v, pattern) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, pattern) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
        return mask_value(text) if pattern.fullmatch(text) else value
    return value
