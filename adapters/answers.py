"""From an agency's answer to an ``Outcome``: the response mapping both adapters share.

An operation's ``response:`` section holds JMESPath expressions evaluated over the answer
(a JSON document; for SOAP the serialized result): ``reference``, ``status``, ``reason``,
``output``.  The status value, as a string, is looked up in the agency's ``statuses:``
map to give ``approved``, ``rejected`` or ``accepted``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from jmespath.exceptions import JMESPathError

from core.domain.errors import ConfigError, PermanentAgencyError
from core.domain.mapping import compile_expression as _compile
from core.masking import raw_excerpt

from .base import Outcome, OutcomeKind

RESPONSE_KEYS = ("reference", "status", "reason", "output")

RESPONSE_SCHEMA: dict[str, Any] = {
    "description": "JMESPath expressions over the agency's answer",
    "type": "object",
    "additionalProperties": False,
    "properties": {key: {"type": "string", "minLength": 1} for key in RESPONSE_KEYS},
}


@functools.lru_cache(maxsize=1024)
def compile_expression(expression: str) -> Any:
    """A compiled JMESPath expression, made once per expression; a bad one is a ``ConfigError``."""
    try:
        return _compile(expression)
    except JMESPathError as exc:
        raise ConfigError(f"bad JMESPath expression {expression!r}: {exc}") from exc


def response_problems(response: dict[str, Any] | None, where: str) -> list[str]:
    """The bad expressions of one ``response:`` section, for ``Adapter.check()``."""
    problems = []
    for key, expression in (response or {}).items():
        try:
            compile_expression(expression)
        except ConfigError as exc:
            problems.append(f"{where}.{key}: {exc}")
    return problems


def jsonable(value: Any) -> Any:
    """``value`` made of dicts, lists, strings, numbers, booleans and None only."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _search(expression: str, answer: Any, *, agency: str, operation: str, key: str, request_id: str) -> Any:
    try:
        return compile_expression(expression).search(answer)
    except (ConfigError, JMESPathError) as exc:
        raise PermanentAgencyError(
            f"agency {agency} operation {operation}: response.{key} {expression!r} failed: {exc}",
            agency=agency, request_id=request_id, raw=raw_excerpt(_dump(answer))) from exc


def _top_level(answer: Any) -> str:
    """What the answer has at its top, for a mapping that looked in the wrong place."""
    if not isinstance(answer, dict):
        return f"the answer is {type(answer).__name__}, not an object"
    keys = sorted(str(k) for k in answer)
    hint = ""
    if {"header", "body"} <= set(keys):
        hint = " (an answer with SOAP headers: map its fields as body.<field>)"
    return f"its top-level keys are: {', '.join(keys) or '(none)'}{hint}"


def _dump(answer: Any) -> str:
    try:
        return json.dumps(answer, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(answer)


def map_answer(agency: Any, operation: str, response: dict[str, str] | None, answer: Any, *,
               request_id: str, default_kind: OutcomeKind | None = None,
               status_code: int | None = None, plain: bool = False) -> Outcome:
    """The ``Outcome`` an answer means, per the ``response:`` expressions and the status map.

    Without a ``status`` expression the kind is ``default_kind`` when given, else
    ``approved`` for agencies that decide synchronously and ``accepted`` otherwise.  An
    unknown status value, or a missing ``reference`` in an approved or accepted answer, is
    a ``PermanentAgencyError`` that keeps the (masked) answer.  ``plain``: the answer is
    made of dicts, lists, str, int, float, bool and None already (``json.loads`` gave it),
    so ``jsonable`` need not copy it.
    """
    response = response or {}
    if not plain:
        answer = jsonable(answer)
    where = f"agency {agency.id} operation {operation}"

    def value(key: str) -> Any:
        expression = response.get(key)
        if not expression:
            return None
        return _search(expression, answer, agency=agency.id, operation=operation, key=key, request_id=request_id)

    def fail(message: str) -> PermanentAgencyError:
        return PermanentAgencyError(f"{where}: {message}", agency=agency.id, request_id=request_id,
                                    status_code=status_code, raw=raw_excerpt(_dump(answer)))

    if response.get("status"):
        status = value("status")
        if status is None:
            raise fail(f"the answer has no status at {response['status']!r}; {_top_level(answer)}")
        if isinstance(status, float) and status.is_integer():
            status = int(status)
        code = str(status)
        mapped = agency.statuses.get(code)
        if mapped is None:
            raise fail(f"unknown status code {code!r}")
        kind = OutcomeKind(mapped)
    elif default_kind is not None:
        kind = default_kind
    else:
        kind = OutcomeKind.APPROVED if agency.decisions == "sync" else OutcomeKind.ACCEPTED

    reference = value("reference")
    if reference is None and response.get("reference") and kind in (OutcomeKind.APPROVED, OutcomeKind.ACCEPTED):
        raise fail(f"the {kind.value} answer has no reference at {response['reference']!r}")

    reason = value("reason")
    output = value("output") if response.get("output") else answer
    if output is None:
        output = {}
    elif not isinstance(output, dict):
        output = {"value": output}
    return Outcome(kind=kind, reference=None if reference is None else str(reference),
                   reason=None if reason is None else str(reason), output=output)
