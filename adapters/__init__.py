"""Everything about talking to agencies: the Adapter interface, the registry, and the
built-in adapters (``rest``, ``soap``).  Knows nothing of Flask or the store."""

from .base import Adapter, AgencyRequest, Outcome, OutcomeKind

__all__ = ["Adapter", "AgencyRequest", "Outcome", "OutcomeKind"]
