"""The catalog's model: agencies, services and steps as the loader fills them in.

Plain frozen dataclasses with their defaults; the loader (``gateway.catalog``) reads and
validates the files, and the adapters and the broker read these objects only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .domain.calendar import WorkingCalendar
from .domain.errors import ConfigError


def resolve_secret(reference: str) -> str:
    """``env:NAME`` or ``file:PATH`` to the secret itself; anything else is taken literally."""
    kind, _, rest = reference.partition(":")
    if kind == "env":
        try:
            return os.environ[rest]
        except KeyError:
            raise ConfigError(f"secret environment variable {rest} is not set") from None
    if kind == "file":
        try:
            return Path(rest).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {rest}: {exc.strerror}") from exc
    return reference


@dataclass(frozen=True)
class Agency:
    """One agency connection, with defaults filled in."""

    id: str
    name: str
    adapter: str
    endpoint: str
    file: str
    decisions: str = "sync"
    connect_timeout: float = 3.0
    read_timeout: float = 15.0
    # The most a whole answer may take once the request is sent (REST): an answer that keeps
    # arriving a little before each read timeout would otherwise hold a call for ever.
    total_timeout: float = 60.0
    max_attempts: int = 5
    retry_delays: tuple[float, ...] = (5, 30, 120, 600)
    failure_threshold: int = 5
    reset_after: float = 30.0
    concurrency: int = 8
    rate_per_second: float | None = None
    # Windows in which the agency must not be called (broker.limits): calls wait them out.
    maintenance: tuple[dict[str, Any], ...] = ()
    auth: dict[str, Any] = field(default_factory=lambda: {"type": "none"})
    callback_secret_ref: str | None = None
    poll_interval: float = 5.0
    poll_backoff: float = 2.0
    poll_max_interval: float = 300.0
    poll_deadline: float = 86400.0
    statuses: dict[str, str] = field(default_factory=dict)
    idempotency_header: str = "Idempotency-Key"
    lookup_before_resend: bool = False
    xroad: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def callback_secret(self) -> str:
        if not self.callback_secret_ref:
            raise ConfigError("agency has no callback secret", file=self.file, field="callback.secret")
        return resolve_secret(self.callback_secret_ref)

    @classmethod
    def from_document(cls, doc: dict[str, Any], *, file: str) -> Agency:
        timeouts, retry = doc.get("timeouts", {}), doc.get("retry", {})
        read_timeout = float(timeouts.get("read", 15.0))
        breaker, limits, poll = doc.get("circuit_breaker", {}), doc.get("limits", {}), doc.get("poll", {})
        idem = doc.get("idempotency", {})
        return cls(
            id=doc["id"], name=doc["name"], adapter=doc["adapter"], endpoint=doc["endpoint"].rstrip("/"),
            file=file, decisions=doc.get("decisions", "sync"),
            connect_timeout=float(timeouts.get("connect", 3.0)), read_timeout=read_timeout,
            total_timeout=float(timeouts.get("total", max(60.0, 2 * read_timeout))),
            max_attempts=int(retry.get("max_attempts", 5)),
            retry_delays=tuple(float(d) for d in retry.get("delays", (5, 30, 120, 600))),
            failure_threshold=int(breaker.get("failure_threshold", 5)),
            reset_after=float(breaker.get("reset_after", 30.0)),
            concurrency=int(limits.get("concurrency", 8)), rate_per_second=limits.get("rate_per_second"),
            maintenance=tuple(doc.get("maintenance", ())),
            auth=doc.get("auth", {"type": "none"}),
            callback_secret_ref=doc.get("callback", {}).get("secret"),
            poll_interval=float(poll.get("interval", 5.0)), poll_backoff=float(poll.get("backoff", 2.0)),
            poll_max_interval=float(poll.get("max_interval", 300.0)),
            poll_deadline=float(poll.get("deadline", 86400.0)),
            statuses={str(k): v for k, v in doc.get("statuses", {}).items()},
            idempotency_header=idem.get("header", "Idempotency-Key"),
            lookup_before_resend=bool(idem.get("lookup_before_resend", False)),
            xroad=doc.get("xroad"), options=doc.get("options", {}), operations=doc["operations"],
        )


@dataclass(frozen=True)
class DocumentKind:
    """A kind of document a service takes (the KTP scan, the deed): what an upload of it may be."""

    title: str
    required: bool = False
    media_types: tuple[str, ...] = ("application/pdf",)
    max_bytes: int = 10 * 1024 * 1024

    def public(self) -> dict[str, Any]:
        return {"title": self.title, "required": self.required, "media_types": list(self.media_types),
                "max_bytes": self.max_bytes}


@dataclass(frozen=True)
class Step:
    """One step of a service: an agency operation and how to build its request."""

    name: str
    agency: str
    operation: str
    after: tuple[str, ...]
    request: dict[str, str]
    compiled: dict[str, Any] = field(compare=False, repr=False, default_factory=dict)
    title: str | None = None
    # The document kinds this step's agency receives.
    documents: tuple[str, ...] = ()


@dataclass(frozen=True)
class Service:
    """One bundled service: its input schema and its steps."""

    id: str
    title: str
    version: Any
    input_schema: dict[str, Any]
    steps: dict[str, Step]
    file: str
    order: tuple[str, ...] = ()
    sla_hours: float | None = None
    sla_working_days: float | None = None
    description: str | None = None
    documents: dict[str, DocumentKind] = field(default_factory=dict)

    @property
    def after(self) -> dict[str, tuple[str, ...]]:
        return {name: step.after for name, step in self.steps.items()}

    def public(self) -> dict[str, Any]:
        """The catalog entry as ``GET /v1/services`` shows it."""
        return {
            "id": self.id, "title": self.title, "version": self.version, "description": self.description,
            "input_schema": self.input_schema,
            "steps": [{"step": s.name, "agency": s.agency, "operation": s.operation, "after": list(s.after),
                       "title": s.title, "documents": list(s.documents)}
                      for s in (self.steps[n] for n in self.order)],
            "documents": {kind: rules.public() for kind, rules in self.documents.items()},
        }


@dataclass(frozen=True)
class Catalog:
    agencies: dict[str, Agency]
    services: dict[str, Service]
    folder: str
    # The hall's working days (weekends, national holidays, the folder's calendar.yaml).
    calendar: WorkingCalendar = field(default_factory=WorkingCalendar)
