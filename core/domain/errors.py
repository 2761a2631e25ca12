"""The one error hierarchy of Satu Pintu.

Library errors (pika, zeep, requests, SQLAlchemy) never travel past the module that
called the library: they are translated into one of these, raised ``from`` the original.
An agency's *decision* (rejected) is not an error at all: it is an ``Outcome``.
"""

from __future__ import annotations


class SatupintuError(Exception):
    """Raised for any failure Satu Pintu itself detects; the root of the hierarchy."""


class ConfigError(SatupintuError):
    """Raised when a catalog file or setting is wrong; names the file and the field."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None):
        self.file = file
        self.field = field
        where = ""
        if file:
            where = f"{file}: "
        if field:
            where += f"{field}: "
        super().__init__(where + message)


class ValidationFailed(SatupintuError):
    """Raised when input breaks a JSON Schema; ``errors`` lists ``{path, message}``."""

    def __init__(self, errors: list[dict[str, str]], message: str = "input is not valid"):
        self.errors = errors
        super().__init__(message + ": " + "; ".join(f"{e['path']}: {e['message']}" for e in errors))


class MappingError(SatupintuError):
    """Raised when a JMESPath mapping cannot be evaluated or finds no value it needs."""

    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        super().__init__(message)


class AgencyError(SatupintuError):
    """Raised by an adapter when a call to an agency fails technically (not a decision)."""

    transient = True

    def __init__(self, message: str, *, agency: str = "", request_id: str = "",
                 status_code: int | None = None, raw: str | None = None):
        self.agency = agency
        self.request_id = request_id
        self.status_code = status_code
        self.raw = raw
        super().__init__(message)


class TransientAgencyError(AgencyError):
    """Raised when a call may succeed later: timeout, connection refused, 5xx, SOAP Server fault."""

    transient = True


class PermanentAgencyError(AgencyError):
    """Raised when retrying cannot help: 4xx, bad credentials, an answer that breaks the mapping."""

    transient = False


class UnsupportedOperation(SatupintuError):
    """Raised when an adapter is asked to poll, cancel or look up and the agency cannot."""


class BrokerUnavailable(SatupintuError):
    """Raised when RabbitMQ cannot be reached or the connection was lost mid-operation."""


class PublishNotConfirmed(SatupintuError):
    """Raised when the broker nacked or returned (unroutable) a message we published."""


class StoreError(SatupintuError):
    """Raised when the database refuses an operation for a reason the caller can act on."""


class Conflict(SatupintuError):
    """Raised when a request conflicts with stored state (idempotency key reuse, terminal state)."""


class NotFound(SatupintuError):
    """Raised when an application, request or resource does not exist for this caller."""
