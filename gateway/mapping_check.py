"""Which request-mapping paths can never find a value (``satupintu config check`` and start-up).

A mapping is a JMESPath expression over ``{data, steps, application}`` (DESIGN §4). JMESPath
answers null for a field that is not there, so a typo such as ``data.applicant.nikk`` would
silently leave the field out of every request.  This module walks each expression's parse
tree (``jmespath.compile(...).parsed``), takes every chain of fields read from the top of
the context, and checks it:

- ``data.…`` against the service's input JSON Schema: a key that is not among an object's
  ``properties`` where no ``additionalProperties``/``patternProperties`` schema lets other
  keys in, or a key below a value that is not an object, can never exist;
- ``steps.<step>.…``: the step must run before this one (in its ``after`` closure), and
  what a mapping reads of it is ``reference``, ``output`` or ``status``;
- ``application.…``: ``id``, ``service`` or ``reference``.

Where the schema does not say (no ``properties``, a ``$ref`` outside the file), the path is
accepted: only what can *never* exist is an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jmespath

STEP_FIELDS = ("reference", "output", "status")
APPLICATION_FIELDS = ("id", "service", "reference")
# Parse-tree nodes whose first child is read from the current value and the rest from
# what it produced: only the first child's fields start at the top of the context.
_LEFT_ONLY = {"pipe", "projection", "filter_projection", "value_projection", "index_expression"}


def field_chains(node: Mapping[str, Any]) -> Iterator[list[str]]:
    """Every chain of field names ``node`` reads starting from the value it is applied to."""
    kind = node.get("type")
    children = node.get("children", [])
    if kind == "field":
        yield [node["value"]]
    elif kind == "subexpression":
        first, rest = children[0], children[1:]
        for chain in field_chains(first):
            chain = list(chain)
            for child in rest:
                if child.get("type") == "field":
                    chain.append(child["value"])
                    continue
                if child.get("type") in _LEFT_ONLY and child.get("children"):
                    chain.extend(next(field_chains(child["children"][0]), []))  # owners of owners[0]
                break
            yield chain
            break  # a subexpression's first child is one chain
    elif kind in _LEFT_ONLY:
        if children:
            yield from field_chains(children[0])
    elif kind == "key_val_pair":
        for child in children:
            yield from field_chains(child)
    else:  # functions, multi-selects, comparators, and/or/not, flatten: each child from the top
        for child in children:
            if isinstance(child, Mapping):
                yield from field_chains(child)


def _resolve(schema: Any, root: Mapping[str, Any]) -> Any:
    ref = schema.get("$ref") if isinstance(schema, Mapping) else None
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            if not isinstance(target, Mapping) or part not in target:
                return {}
            target = target[part]
        return _resolve(target, root)
    return schema if isinstance(schema, Mapping) else {}


def _branches(schema: Mapping[str, Any], root: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The schema and the alternatives it combines (allOf/anyOf/oneOf), references resolved."""
    out = [schema]
    for word in ("allOf", "anyOf", "oneOf"):
        for branch in schema.get(word, []) or []:
            out.extend(_branches(_resolve(branch, root), root))
    return out


def _child(schema: Mapping[str, Any], key: str, root: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The schema of ``key`` below ``schema``: {} when anything may be there, None when nothing can.

    An object that lists its ``properties`` and lets no other keys in by a schema of its own
    (``additionalProperties``/``patternProperties``) has only those keys: another is a typo.
    """
    found: list[Mapping[str, Any]] = []
    for branch in _branches(schema, root):
        types = branch.get("type")
        types = [types] if isinstance(types, str) else (types or [])
        if types and "object" not in types:
            continue
        properties, extra = branch.get("properties"), branch.get("additionalProperties")
        if (branch is schema and not types and properties is None and extra is None
                and any(word in branch for word in ("allOf", "anyOf", "oneOf"))):
            continue  # only combines others: they say which keys there are
        if isinstance(properties, Mapping) and key in properties:
            found.append(_resolve(properties[key], root))
        elif isinstance(extra, Mapping):
            found.append(_resolve(extra, root))
        elif extra is True or branch.get("patternProperties") or (extra is None and properties is None):
            found.append({})
    if not found:
        return None
    return found[0] if len(found) == 1 else {"anyOf": found}


def data_problem(chain: list[str], schema: Mapping[str, Any]) -> str | None:
    """Why ``data.<chain>`` can never exist in data valid against ``schema``, or None."""
    node: Mapping[str, Any] = _resolve(schema, schema)
    for depth, key in enumerate(chain):
        if not node:
            return None
        child = _child(node, key, schema)
        if child is None:
            where = "data" + "".join(f".{k}" for k in chain[:depth])
            known = sorted({k for b in _branches(node, schema) for k in (b.get("properties") or {})})
            hint = f"; {where} has: {', '.join(known)}" if known else f"; {where} is not an object"
            return f"{where}.{key} is not in the input schema{hint}"
        node = child
    return None


def mapping_problems(step: str, expression: str, *, schema: Mapping[str, Any], earlier: set[str]) -> list[str]:
    """What is wrong with one mapping of ``step`` (which runs after the steps in ``earlier``)."""
    try:
        tree = jmespath.compile(expression).parsed
    except jmespath.exceptions.JMESPathError:
        return []  # reported by compile_mapping with its own message
    problems = []
    for chain in field_chains(tree):
        head, rest = chain[0], chain[1:]
        if head == "data":
            problem = data_problem(rest, schema)
        elif head == "steps":
            if not rest:
                problem = None
            elif rest[0] not in earlier:
                problem = (f"steps.{rest[0]} is not a step that runs before {step!r} "
                           f"(its after: closure is {', '.join(sorted(earlier)) or 'empty'})")
            elif len(rest) > 1 and rest[1] not in STEP_FIELDS:
                problem = f"steps.{rest[0]}.{rest[1]}: a step offers {', '.join(STEP_FIELDS)}"
            else:
                problem = None
        elif head == "application":
            problem = (f"application.{rest[0]}: the application offers {', '.join(APPLICATION_FIELDS)}"
                       if rest and rest[0] not in APPLICATION_FIELDS else None)
        else:
            problem = f"{head}: a mapping reads data, steps or application"
        if problem and problem not in problems:
            problems.append(problem)
    return problems


def before(step: str, after: Mapping[str, tuple[str, ...]]) -> set[str]:
    """Every step that must be approved before ``step`` runs (the closure of ``after``)."""
    seen: set[str] = set()
    todo = list(after.get(step, ()))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(after.get(name, ()))
    return seen
