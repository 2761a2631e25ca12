"""The adapter interface: what an agency connection must do, and what it returns.

An adapter is to an agency what a ``requests`` transport adapter is to a URL scheme: one
method that matters, ``send(request) -> Outcome``, plus ``close()``.  Optional abilities
(``poll``, ``cancel``, ``lookup``) raise ``UnsupportedOperation`` unless overridden.

Adapters hold no database and never import Flask; they are built once per worker process
per agency (``__init__`` stores configuration and opens nothing expensive) and must be
safe to call from several threads at once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar

from core.domain.errors import AgencyError, UnsupportedOperation
from core.settings import Settings


class OutcomeKind(str, enum.Enum):
    """What happened to one call to an agency."""

    ACCEPTED = "accepted"  # the agency took it; the decision comes later (callback or poll)
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"  # answer to cancel(): the agency withdrew the request
    TRANSIENT = "transient"  # technical failure that may succeed on retry
    PERMANENT = "permanent"  # technical failure that retrying cannot fix

    @property
    def is_failure(self) -> bool:
        return self in (OutcomeKind.TRANSIENT, OutcomeKind.PERMANENT)


@dataclass(frozen=True)
class AgencyRequest:
    """One step of one application, as handed to an adapter."""

    request_id: str  # stable across attempts; sent to the agency as the idempotency key
    application_id: str
    service: str
    step: str
    agency: str
    operation: str  # the operation name in the agency's config (``operations:`` key)
    payload: dict[str, Any]  # the mapped request body
    attempt: int = 1
    reference: str | None = None  # the agency's reference, once known (poll, cancel)
    headers: dict[str, str] = field(default_factory=dict)  # correlation: traceparent, ...


@dataclass(frozen=True)
class Outcome:
    """The result of one call: a decision, an acknowledgement, or a failure."""

    kind: OutcomeKind
    reference: str | None = None
    reason: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    raw: str | None = None  # the agency's raw answer, kept (masked) for failures

    @classmethod
    def from_error(cls, error: AgencyError) -> Outcome:
        kind = OutcomeKind.TRANSIENT if error.transient else OutcomeKind.PERMANENT
        return cls(kind=kind, reason=str(error), raw=error.raw)


class Adapter:
    """Base class of every adapter.

    Subclasses set ``name`` and may set ``options_schema`` and ``operation_schema``
    (JSON Schemas for the agency file's ``options:`` section and for each entry of its
    ``operations:``; the catalog checks them at start-up, so unknown keys are errors).  ``agency`` is
    the validated agency configuration (``core.model.Agency``); ``settings`` the process's
    settings (the egress policy's flags), defaults when not given.
    """

    name: ClassVar[str] = ""
    options_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    operation_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    def __init__(self, agency: Any, settings: Settings | None = None) -> None:
        self.agency = agency
        self.settings = settings if settings is not None else Settings()

    def send(self, request: AgencyRequest) -> Outcome:
        raise NotImplementedError

    def poll(self, request: AgencyRequest) -> Outcome:
        raise UnsupportedOperation(f"adapter {self.name!r} of agency {self.agency.id!r} cannot poll")

    def cancel(self, request: AgencyRequest) -> Outcome:
        raise UnsupportedOperation(f"adapter {self.name!r} of agency {self.agency.id!r} cannot cancel")

    def lookup(self, request: AgencyRequest) -> Outcome | None:
        """Ask the agency whether ``request`` already went through; None when it did not."""
        raise UnsupportedOperation(f"adapter {self.name!r} of agency {self.agency.id!r} cannot look up")

    def check(self) -> list[str]:
        """Problems found without sending anything (WSDL loads, operations exist); [] if none."""
        return []

    def close(self) -> None:
        """Release connections and caches; never raises."""
