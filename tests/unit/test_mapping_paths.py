"""Mappings that are only fields (``data.company.name``) are read straight from the dicts
(``gateway/domain/mapping.py`` ``FieldPath``): they must answer exactly what jmespath answers,
on any JSON document; every other expression is still jmespath's."""

import json

import jmespath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.errors import ConfigError, MappingError
from core.domain.mapping import FieldPath, apply_mapping, compile_expression, compile_mapping

KEYS = ["a", "b", "data", "name", "_x", "x1", "length", "true", "null"]

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
keys = st.sampled_from(KEYS) | st.text(max_size=4)
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                         | st.dictionaries(keys, inner, max_size=4), max_leaves=20)


def spelled(key: str) -> str:
    """``key`` as JMESPath spells a field: bare when it is an identifier, else quoted."""
    bare = key and (key[0].isascii() and (key[0].isalpha() or key[0] == "_")) and all(
        c.isascii() and (c.isalnum() or c == "_") for c in key)
    return key if bare else json.dumps(key)


paths = st.lists(keys, min_size=1, max_size=5)


@settings(max_examples=500)
@given(document=documents, path=paths)
def test_a_field_path_answers_what_jmespath_answers(document, path):
    expression = ".".join(spelled(k) for k in path)
    compiled = compile_expression(expression)
    assert isinstance(compiled, FieldPath), expression
    assert compiled.search(document) is jmespath.search(expression, document)


@settings(max_examples=300)
@given(document=st.dictionaries(keys, documents, max_size=4), path=paths)
def test_a_field_path_into_a_document_that_has_it_finds_the_same_value(document, path):
    """Most random paths miss; plant a value at the path so that hits are tested as often."""
    node = document
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = ["planted"]
    expression = ".".join(spelled(k) for k in path)
    found = compile_expression(expression).search(document)
    assert found == ["planted"]
    assert found is jmespath.search(expression, document)


@pytest.mark.parametrize("expression", [
    "a[0]", "a.b[*].c", "length(a)", "a || b", "a && b", "`1`", "'x'", "a.[b, c]", "a.{x: b}", "a[?b == `1`]",
    "@", "a | b", "!a", "*.a", "a.*", "a[]", "(a || b).c", "a.length(@)"])
def test_anything_more_than_fields_is_left_to_jmespath(expression):
    compiled = compile_expression(expression)
    assert not isinstance(compiled, FieldPath)
    document = {"a": [{"b": 1, "c": 2}], "b": {"c": 3}}
    assert compiled.search(document) == jmespath.search(expression, document)


def test_field_paths_are_what_the_demo_catalog_maps_with():
    compiled = compile_mapping({"name": "data.company.name", "n": "steps.company.reference", "q": '"odd key".x'})
    assert {name: type(c) for name, c in compiled.items()} == dict.fromkeys(("name", "n", "q"), FieldPath)
    context = {"data": {"company": {"name": "PT Maju"}}, "steps": {"company": None}, "odd key": {"x": 0}}
    assert apply_mapping(compiled, context) == {"name": "PT Maju", "q": 0}  # null left out, 0 kept


def test_a_bad_expression_is_still_a_config_error_and_a_type_error_a_mapping_error():
    with pytest.raises(ConfigError):
        compile_mapping({"x": "data.[oops"})
    with pytest.raises(MappingError):
        apply_mapping(compile_mapping({"x": "length(data.n)"}), {"data": {"n": 5}})
