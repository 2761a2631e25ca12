"""Fault knobs: the live settings that make a sandbox agency slow, flaky, strict or down.

Knobs are validated strictly: an unknown name or a knob the agency does not support is an
error with a hint, so a typo in a test never silently does nothing.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

AUTH_FIELDS = {
    "bearer": ("token",),
    "basic": ("username", "password"),
    "api_key": ("header", "value"),
    "hmac": ("secret",),
    "wsse": ("username", "password"),
}
BAD_ANSWERS = ("malformed", "xxe", "billion_laughs", "wrong_shape")

COMMON_DEFAULTS: dict[str, Any] = {
    "latency_ms": 0,
    "failure_rate": 0.0,
    "reject_if_contains": "REJECT",
    "outage_seconds": 0,
    "auth": None,
}
# Knobs only some agencies understand.
EXTRA_DEFAULTS: dict[str, dict[str, Any]] = {
    "company-registry": {},
    "municipality": {"decision_delay": 1.0, "callback_url": "", "callback_secret": ""},
    "tax-office": {"bad_answer": None},
    "social-security": {"decision_delay": 1.0, "bad_answer": None},
}
SOAP_AGENCIES = ("tax-office", "social-security")


class KnobError(ValueError):
    """Raised when a knob name or value is not acceptable for this agency."""


def _number(name: str, value: Any, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise KnobError(f"{name} must be a number, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise KnobError(f"{name} must be {bound}, got {value!r}")
    return value


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise KnobError(f"{name} must be a string, got {value!r}")
    return value


def _auth(agency: str, value: Any) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in AUTH_FIELDS:
        raise KnobError(
            f"auth must be null or an object with type one of {sorted(AUTH_FIELDS)}"
        )
    kind = value["type"]
    if kind == "wsse" and agency not in SOAP_AGENCIES:
        raise KnobError(
            "auth type 'wsse' is only for the SOAP agencies (tax-office, social-security)"
        )
    wanted = set(AUTH_FIELDS[kind])
    given = set(value) - {"type"}
    if given != wanted:
        raise KnobError(
            f"auth type {kind!r} takes exactly {sorted(wanted)}, got {sorted(given)}"
        )
    for field in wanted:
        _string(f"auth.{field}", value[field])
    return dict(value)


def validate(agency: str, changes: Any) -> dict[str, Any]:
    """Check a knob change set for ``agency`` and return it normalised (null = default)."""
    if not isinstance(changes, dict):
        raise KnobError("knobs must be a JSON object")
    defaults = {**COMMON_DEFAULTS, **EXTRA_DEFAULTS[agency]}
    clean: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in defaults:
            other = [a for a, extra in EXTRA_DEFAULTS.items() if name in extra]
            hint = f" (only {', '.join(other)} has it)" if other else ""
            raise KnobError(
                f"unknown knob {name!r} for {agency}{hint}; known: {', '.join(sorted(defaults))}"
            )
        if value is None and name != "auth":
            clean[name] = copy.deepcopy(defaults[name])
            continue
        if name == "latency_ms":
            value = _number(name, value, 0, 600_000)
        elif name == "failure_rate":
            value = _number(name, value, 0, 1)
        elif name in ("outage_seconds", "decision_delay"):
            value = _number(name, value, 0)
        elif name in ("reject_if_contains", "callback_url", "callback_secret"):
            value = _string(name, value)
        elif name == "auth":
            value = _auth(agency, value)
        elif name == "bad_answer" and value not in BAD_ANSWERS:
            raise KnobError(f"bad_answer must be null or one of {list(BAD_ANSWERS)}")
        clean[name] = value
    return clean


class Knobs:
    """The current knob values of one agency; safe to read and change from any thread."""

    def __init__(self, agency: str, initial: dict[str, Any] | None = None) -> None:
        self.agency = agency
        self._lock = threading.Lock()
        self._startup = validate(agency, initial or {})
        self._values: dict[str, Any] = {}
        self._outage_until = 0.0
        self.restore()

    def restore(self) -> None:
        """Go back to the values the sandbox was started with."""
        with self._lock:
            self._values = {**COMMON_DEFAULTS, **EXTRA_DEFAULTS[self.agency]}
            self._outage_until = 0.0
        self.update(copy.deepcopy(self._startup))

    def update(self, changes: dict[str, Any]) -> None:
        """Validate and apply a (partial) change set; nothing is applied if any part is bad."""
        clean = validate(self.agency, changes)
        with self._lock:
            self._values.update(clean)
            if "outage_seconds" in clean:
                # The outage window starts when the knob is set, not when the sandbox started.
                self._outage_until = time.monotonic() + clean["outage_seconds"]

    def get(self, name: str) -> Any:
        with self._lock:
            return self._values[name]

    def in_outage(self) -> bool:
        with self._lock:
            return time.monotonic() < self._outage_until

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            values = copy.deepcopy(self._values)
            values["outage_remaining"] = round(
                max(0.0, self._outage_until - time.monotonic()), 3
            )
        return values
