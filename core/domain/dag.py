"""The step DAG of a service: validation, which steps are ready, what becomes skipped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .errors import ConfigError
from .status import RequestStatus


def check_dag(after: Mapping[str, Sequence[str]], *, file: str | None = None) -> list[str]:
    """Validate ``{step: [dependencies]}`` and return the steps in a topological order.

    Raises ``ConfigError`` naming the step for an unknown dependency or a cycle.
    """
    for step, deps in after.items():
        for dep in deps:
            if dep not in after:
                raise ConfigError(f"step {step!r} depends on unknown step {dep!r}",
                                  file=file, field=f"steps.{step}.after")
            if dep == step:
                raise ConfigError(f"step {step!r} depends on itself", file=file, field=f"steps.{step}.after")
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(step: str, path: list[str]) -> None:
        if state.get(step) == 2:
            return
        if state.get(step) == 1:
            cycle = " -> ".join(path[path.index(step):] + [step])
            raise ConfigError(f"steps form a cycle: {cycle}", file=file, field=f"steps.{step}.after")
        state[step] = 1
        for dep in after[step]:
            visit(dep, path + [step])
        state[step] = 2
        order.append(step)

    for step in after:
        visit(step, [])
    return order


def initial_statuses(after: Mapping[str, Sequence[str]]) -> dict[str, RequestStatus]:
    """Steps without dependencies start ``queued``; the others wait ``pending``."""
    return {step: RequestStatus.QUEUED if not deps else RequestStatus.PENDING for step, deps in after.items()}


def advance(after: Mapping[str, Sequence[str]], statuses: Mapping[str, RequestStatus]) -> dict[str, RequestStatus]:
    """Changes that follow from ``statuses``: pending steps become queued or skipped.

    A pending step is released (``queued``) when all its dependencies are approved, and
    ``skipped`` as soon as any dependency ended any other terminal way.  Skipping
    propagates through the whole DAG in one call.
    """
    current = dict(statuses)
    changes: dict[str, RequestStatus] = {}
    moved = True
    while moved:
        moved = False
        for step, deps in after.items():
            if current[step] is not RequestStatus.PENDING:
                continue
            dep_statuses = [current[d] for d in deps]
            if any(s.terminal and s is not RequestStatus.APPROVED for s in dep_statuses):
                new = RequestStatus.SKIPPED
            elif all(s is RequestStatus.APPROVED for s in dep_statuses):
                new = RequestStatus.QUEUED
            else:
                continue
            current[step] = changes[step] = new
            moved = True
    return changes
