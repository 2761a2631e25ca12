"""Maxima in service input schemas (OWASP API4): every string needs ``maxLength`` and every
array ``maxItems``, so no field can carry a megabyte into the store, the logs or an agency.

``satupintu config check`` warns (it does not fail) for each field without one; the body
cap (``SATUPINTU_MAX_BODY_BYTES``) still bounds the whole request.
"""

from __future__ import annotations

from typing import Any


def unbounded_fields(schema: dict[str, Any]) -> list[str]:
    """``"/applicant/nik: a string without maxLength"`` for each unbounded string or array."""
    problems: list[str] = []
    _walk(schema, "", problems, depth=0)
    return problems


def _types(node: dict[str, Any]) -> set[str]:
    kind = node.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return set()


def _walk(node: Any, path: str, problems: list[str], depth: int) -> None:
    if not isinstance(node, dict) or depth > 32:
        return
    fixed = "enum" in node or "const" in node
    types = _types(node)
    where = path or "/"
    if "string" in types and not fixed and "maxLength" not in node:
        problems.append(f"{where}: a string without maxLength")
    if "array" in types and "maxItems" not in node:
        problems.append(f"{where}: an array without maxItems")
    for key, child in (node.get("properties") or {}).items():
        _walk(child, f"{path}/{key}", problems, depth + 1)
    for key, child in (node.get("$defs") or node.get("definitions") or {}).items():
        _walk(child, f"#/$defs/{key}", problems, depth + 1)
    items = node.get("items")
    if isinstance(items, dict):
        _walk(items, f"{path}/*", problems, depth + 1)
    for i, child in enumerate(node.get("prefixItems") or ()):
        _walk(child, f"{path}/{i}", problems, depth + 1)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        _walk(extra, f"{path}/*", problems, depth + 1)
    for keyword in ("allOf", "anyOf", "oneOf"):
        for child in node.get(keyword) or ():
            _walk(child, path, problems, depth + 1)
