"""Pieces of the submission path that were made cheaper still give what they stand in for:
the prepared JSON encoder fails as ``json.dumps`` fails however deep the value (it checks for
cycles only after a ``RecursionError``), and a multi-row INSERT is the same text whether it
was made or kept."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy.dialects import sqlite

from gateway.applications import _INSERT_EVENTS
from gateway.store import bulk, records


def _outcome(dumps: Any, value: Any) -> Any:
    try:
        return dumps(value)
    except Exception as exc:  # noqa: BLE001 -- the failure is the outcome compared
        return type(exc)


def _nested(depth: int, *, shared: bool) -> Any:
    """Lists ``depth`` deep; ``shared``: each level holds the one below twice (no cycle)."""
    value: Any = []
    for _ in range(depth):
        value = [value, {"k": value}] if shared else [value]
    return value


@pytest.mark.parametrize(("depth", "shared"), [(10, True), (400, False), (5000, False)])
def test_prepared_json_is_json_dumps_at_any_depth(depth, shared):
    value = _nested(depth, shared=shared)
    assert _outcome(records.json_text, value) == _outcome(json.dumps, value)
    assert _outcome(records.canonical, value) == _outcome(
        lambda v: json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str), value)


def test_a_cycle_reached_through_default_is_reported_as_json_dumps_reports_it():
    class Loop:
        def __init__(self):
            self.items = [self]

    loop = Loop()
    canonical = records.json_dumper(sort_keys=True, default=lambda o: o.items)
    with pytest.raises(ValueError, match="Circular"):
        canonical({"x": loop})
    with pytest.raises(ValueError, match="Circular"):
        json.dumps({"x": loop}, sort_keys=True, default=lambda o: o.items)
    assert canonical({"b": [1], "a": None}) == json.dumps({"b": [1], "a": None}, sort_keys=True)


def test_a_multirow_insert_is_the_same_text_made_or_kept():
    prepared = _INSERT_EVENTS._prepared.get(sqlite.dialect()) or _INSERT_EVENTS._prepare(sqlite.dialect())
    made = bulk._multirow(prepared, 3)
    assert prepared.statements[3] is made
    assert made == prepared.head + ", ".join([prepared.row] * 3)
    assert made.count("(") == made.count(")") == 3 + 1  # the column list and three rows
