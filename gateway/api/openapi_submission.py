"""The ``Submission`` schema of /openapi.json, from the catalog's input schemas.

One branch per service: its ``data`` is the service's input schema, copied with the text
rules of ``core.domain.text`` added as patterns (a generated client, and schemathesis, then
know that a control character is refused before they send one), and its ``documents`` the
service's document kinds.
"""

from __future__ import annotations

from typing import Any

from flask import json

from core.domain.text import NAMES
from core.model import Catalog, Service

# What core/domain/text.py refuses in a submitted text (tests/security/test_spec_agreement.py
# holds every code point against it): control characters but tab, LF and CR, and Unicode
# noncharacters; in names and references also bidi controls and zero-width characters.
# Literal characters, not escapes: ECMA-262 (with the u flag) and Python's re read them alike.
_REFUSED = ("\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff"
            + "".join(chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(1, 17)))
_INVISIBLE = "\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
TEXT = f"^[^{_REFUSED}]*$"
NAME = f"^[^{_REFUSED}{_INVISIBLE}]*$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _guarded(schema: Any, name_like: bool = False) -> Any:
    """A copy of an input schema in which every string, and every key an object may add, is
    text a submission takes: ``TEXT``, or ``NAME`` under a key like ``name`` / ``reference``
    and in the arrays below one, as ``core.domain.text.text_problems`` decides.  (``not`` and
    ``if`` are left alone: a pattern there would turn into its opposite.)"""
    if isinstance(schema, list):
        return [_guarded(s, name_like) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {k: _guarded(v, bool(NAMES.search(k))) for k, v in value.items()}
        elif key in ("items", "prefixItems", "contains", "allOf", "anyOf", "oneOf", "then", "else"):
            out[key] = _guarded(value, name_like)
        elif key in ("additionalProperties", "unevaluatedProperties", "unevaluatedItems"):
            out[key] = _guarded(value)
        elif key in ("patternProperties", "$defs", "definitions"):
            out[key] = {k: _guarded(v) for k, v in value.items()}
        else:
            out[key] = value
    kinds = schema.get("type") if isinstance(schema.get("type"), list) else [schema.get("type")]
    extra: list[dict[str, Any]] = []
    if "string" in kinds:
        extra.append({"pattern": NAME if name_like else TEXT})
    if "object" in kinds and schema.get("additionalProperties", True) is not False:
        extra.append({"propertyNames": {"pattern": TEXT}})
    for rule in extra:
        if next(iter(rule)) in out:  # beside the pattern (or propertyNames) the schema has already
            out.setdefault("allOf", []).append(rule)
        else:
            out.update(rule)
    return out


def _documents(service: Service) -> dict[str, Any]:
    """An application's ``documents``: the service's kinds, each the id of an upload."""
    schema: dict[str, Any] = {"type": "object", "description": "the application's documents: "
                              "{KIND: the id POST /v1/documents gave}",
                              "additionalProperties": {"type": "string", "pattern": "^doc_[0-9a-f]{32}$"}}
    if not service.documents:
        return {**schema, "maxProperties": 0}
    required = sorted(kind for kind, rules in service.documents.items() if rules.required)
    return {**schema, "propertyNames": {"enum": sorted(service.documents)}, **({"required": required} if required else {})}


def submission(catalog: Catalog) -> tuple[dict[str, Any], dict[str, Any]]:
    """``Submission`` as one branch per service whose ``data`` is the service's input schema."""
    components: dict[str, Any] = {}
    shapes = []
    for service_id in sorted(catalog.services):
        service = catalog.services[service_id]
        name = "Data_" + "".join(ch if ch.isalnum() else "_" for ch in service_id)
        schema = {k: v for k, v in _guarded(service.input_schema).items() if k not in ("$schema", "$id")}
        # Local references inside the input schema now live under components/schemas/<name>.
        components[name] = json.loads(json.dumps(schema).replace('"#/', f'"#/components/schemas/{name}/'))
        shapes.append(_shape({"const": service_id}, _ref(name), _documents(service)))
    if not shapes:
        shapes = [_shape({"type": "string"}, {"type": "object"}, {"type": "object", "maxProperties": 0})]
    return (shapes[0] if len(shapes) == 1 else {"oneOf": shapes}), components


def _shape(service: dict[str, Any], data: dict[str, Any], documents: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["service", "data"], "additionalProperties": False,
            "properties": {"service": service, "data": data, "documents": documents,
                           "reference": {"type": "string", "maxLength": 200, "pattern": NAME}}}
