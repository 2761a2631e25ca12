"""The quick first pass of ``schema_errors`` never stands in for jsonschema where they differ.

``gateway.quick_schema.quick_check`` says "plainly valid" without jsonschema; whenever it
says so, jsonschema must find no error, and ``schema_errors`` must answer exactly what
jsonschema alone answers for every document.  Checked with hypothesis on the catalogs'
service schemas and on generated schemas made of the keywords the quick check compiles,
with documents drawn near each schema (mostly valid, then bent) and from arbitrary JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import applications as apps
from gateway.quick_schema import quick_check

REPO = Path(__file__).resolve().parents[2]
CATALOG_SCHEMAS = sorted([*REPO.glob("config/services/*.schema.json"), *REPO.glob("bench/catalog/services/*.schema.json")])


def _jsonschema_errors(schema: Any, document: Any, prefix: str = "") -> list[dict[str, str]]:
    """What ``schema_errors`` answered before it had a quick check: jsonschema alone."""
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    return apps.validator_errors(validator, document, prefix=prefix)


def _fresh(schema: Any) -> Any:
    """An equal copy, so the module's per-schema cache never carries over between examples."""
    return json.loads(json.dumps(schema))


# --- documents -----------------------------------------------------------------------

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**18), 10**18),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                     st.sampled_from(["", "a", "PT", "12345", "1234567890123456", "+62 812 3456", "x@y", "abc",
                                      "3171012345670123", "1.0", "  "]),
                     st.sampled_from([0, 1, -1, 1.0, 0.5, 2**53, 10**15, 10**15 + 1, -0.0]))
ANY_JSON = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(["a", "b", "name", "nik", "x", "extra"]) | st.text(max_size=4),
                                                 inner, max_size=4)), max_leaves=12)


def _near(schema: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Documents close to what ``schema`` accepts: mostly valid, sometimes off by one thing."""
    if not isinstance(schema, dict) or depth > 6:
        return ANY_JSON
    options = [_shaped(schema, depth)]
    return st.one_of(*options, ANY_JSON) if depth else st.one_of(_shaped(schema, depth), _shaped(schema, depth),
                                                                   ANY_JSON)


def _shaped(schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | st.just("NOT-A-MEMBER")
    if "const" in schema:
        return st.just(schema["const"]) | ANY_JSON
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else (kinds or ["object", "string", "integer"])
    return st.one_of(*(_of_type(kind, schema, depth) for kind in kinds))


def _of_type(kind: str, schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    if kind == "object":
        properties = schema.get("properties") or {}
        required = [n for n in schema.get("required", []) if n in properties]
        optional = [n for n in properties if n not in required]
        base = st.fixed_dictionaries({n: _near(properties[n], depth + 1) for n in required},
                                     optional={n: _near(properties[n], depth + 1) for n in optional})
        extra = st.dictionaries(st.sampled_from(["extra", "zz"]), ANY_JSON, max_size=1)
        drop = st.sampled_from([None, *required]) if required else st.just(None)
        return st.tuples(base, extra, drop).map(
            lambda t: {k: v for k, v in {**t[0], **t[1]}.items() if k != t[2]})
    if kind == "array":
        item = schema.get("items", True)
        low, high = schema.get("minItems", 0), schema.get("maxItems", 4)
        return st.lists(_near(item, depth + 1), min_size=max(0, low - 1),
                        max_size=max(min(high + 1, low + 5), low))
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength", 20)
        high = min(high, low + 30)
        sized = st.text(alphabet="0123456789abc +@.", min_size=max(0, low - 1), max_size=max(high + 1, low))
        digits = st.integers(0, 10**20).map(str)
        return st.one_of(sized, digits, st.just("a" * low), st.just("9" * high), st.just("siti@example.id"))
    if kind in ("integer", "number"):
        bounds = [schema.get(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")]
        edges = [b + d for b in bounds if b is not None for d in (-1, 0, 1)]
        values = st.integers(-(10**16), 10**16) | st.sampled_from(edges or [0])
        if kind == "number":
            values = values | st.floats() | st.sampled_from([float(e) for e in edges] or [0.5])
        return values | st.sampled_from([1.0, True, False])
    if kind == "boolean":
        return st.booleans() | st.sampled_from([0, 1])
    return st.none() | st.just(0)


# --- schemas made of what the quick check compiles ------------------------------------

_PATTERNS = ["^[0-9]{5}$", "^[0-9]{16}$", "^\\+?[0-9 ]{6,20}$", "a", "^$", "[^@]+@[^@]+", "^\\d"]
_LEAF = st.one_of(
    st.fixed_dictionaries({"type": st.just("string")}, optional={
        "minLength": st.integers(0, 4), "maxLength": st.integers(0, 20), "pattern": st.sampled_from(_PATTERNS),
        "format": st.sampled_from(["email", "date", "ipv4", "uuid", "no-such-format"]), "x-pii": st.just(True),
        "description": st.text(max_size=5)}),
    st.fixed_dictionaries({"type": st.sampled_from(["integer", "number", ["integer", "null"], ["number", "string"]])},
                          optional={"minimum": st.integers(-5, 5) | st.floats(-5, 5),
                                    "maximum": st.integers(0, 10**15), "exclusiveMinimum": st.integers(-3, 3),
                                    "exclusiveMaximum": st.floats(-3, 3) | st.integers(0, 9)}),
    st.fixed_dictionaries({"enum": st.lists(st.sampled_from(["PT", "CV", "", "a", 1, None, True, 1.0]),
                                            min_size=1, max_size=4)}),
    st.fixed_dictionaries({"const": st.sampled_from(["PT", "", 1, None, False, [1], {"a": 1}])}),
    st.fixed_dictionaries({"type": st.sampled_from(["boolean", "null"])}),
    st.fixed_dictionaries({}, optional={"minimum": st.integers(-2, 2), "maxLength": st.integers(0, 3),
                                        "minItems": st.integers(0, 2), "minProperties": st.integers(0, 2)}),
    st.booleans(),
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    names = st.sampled_from(["a", "b", "name", "nik", "x"])
    obj = st.builds(
        lambda props, required, additional, extra: {
            "type": "object", "properties": props,
            **({"required": sorted(set(required))} if required else {}),
            **({"additionalProperties": additional} if additional is not None else {}), **extra},
        st.dictionaries(names, children, max_size=4), st.lists(names, max_size=3),
        st.one_of(st.none(), st.booleans(), children),
        st.fixed_dictionaries({}, optional={"minProperties": st.integers(0, 2), "maxProperties": st.integers(0, 4),
                                            "title": st.just("t")}))
    array = st.builds(lambda items, extra: {"type": "array", "items": items, **extra}, children,
                      st.fixed_dictionaries({}, optional={"minItems": st.integers(0, 2),
                                                          "maxItems": st.integers(0, 4)}))
    untyped = st.builds(lambda props: {"properties": props}, st.dictionaries(names, children, max_size=2))
    return st.one_of(obj, array, untyped)


SCHEMAS = st.recursive(_LEAF, _containers, max_leaves=8)


# --- the properties -------------------------------------------------------------------

def _agrees(schema: Any, document: Any) -> None:
    expected = _jsonschema_errors(schema, document, prefix="/data")
    quick = quick_check(schema, jsonschema.FormatChecker())
    if quick is not None and quick(document):
        assert expected == [], f"the quick check passed a document jsonschema refuses: {expected}"
    assert apps.schema_errors(_fresh(schema), document, prefix="/data") == expected


@pytest.mark.parametrize("path", CATALOG_SCHEMAS, ids=lambda p: p.name)
def test_every_catalog_schema_has_a_quick_check(path):
    assert quick_check(json.loads(path.read_text()), jsonschema.FormatChecker()) is not None


@pytest.mark.parametrize("path", CATALOG_SCHEMAS, ids=lambda p: p.name)
def test_a_catalog_schema_answers_as_jsonschema_alone_would(path):
    schema = json.loads(path.read_text())

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_near(schema))
    def check(document):
        _agrees(schema, document)
    check()


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.data_too_large])
@given(st.data())
def test_a_generated_schema_answers_as_jsonschema_alone_would(data):
    schema = data.draw(SCHEMAS)
    document = data.draw(_near(schema))
    _agrees(schema, document)


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_a_value_at_a_bound_answers_as_jsonschema_alone_would(data):
    """Leaf schemas alone, so that values right at a bound or a length limit come up often."""
    schema = data.draw(_LEAF)
    _agrees(schema, data.draw(_shaped(schema, 0) if isinstance(schema, dict) else ANY_JSON))


def test_the_example_bundles_take_the_quick_path():
    """The examples are valid: the quick check must vouch for them, or it saves nothing."""
    for path in sorted(REPO.glob("examples/*.json")):
        body = json.loads(path.read_text())
        schema_path = REPO / "config" / "services" / f"{body['service']}.schema.json"
        if not schema_path.exists():
            continue
        quick = quick_check(json.loads(schema_path.read_text()), jsonschema.FormatChecker())
        assert quick is not None and quick(body["data"]) is True, path.name


@pytest.mark.parametrize("schema", [
    {"$ref": "#/$defs/x", "$defs": {"x": {"type": "string"}}},
    {"type": "object", "patternProperties": {"^a": {"type": "string"}}, "additionalProperties": False},
    {"allOf": [{"type": "string"}]},
    {"type": "object", "properties": {"a": {"$schema": "http://json-schema.org/draft-04/schema#",
                                            "minimum": 0, "exclusiveMinimum": True}}},
    {"type": "number", "multipleOf": 3},
    {"type": "array", "prefixItems": [{"type": "string"}], "items": False},
    {"type": "strin"},
])
def test_a_keyword_the_quick_check_does_not_know_leaves_everything_to_jsonschema(schema):
    assert quick_check(schema, jsonschema.FormatChecker()) is None


@pytest.mark.parametrize("schema, document", [
    ({"type": "integer"}, 1.0),  # valid for jsonschema, not vouched for: jsonschema decides
    ({"enum": [1, "a"]}, 1),
    ({"type": "number", "minimum": 0}, math.nan),
    ({"const": [1]}, [1]),
])
def test_what_the_quick_check_does_not_vouch_for_is_still_valid(schema, document):
    assert apps.schema_errors(_fresh(schema), document) == _jsonschema_errors(schema, document) == []
