"""What an upload can end in besides a stored document; the API turns each into a problem."""

from __future__ import annotations

from .scan import ScannerUnavailable
from .store import DocumentMissing, StoreUnavailable

__all__ = ["DocumentMissing", "Refused", "ScannerUnavailable", "StoreUnavailable"]


class Refused(Exception):
    """Raised when an upload is refused for what it is: ``path`` names the field (``/file``, ``/kind``)."""

    def __init__(self, status: int, reason: str, path: str, message: str):
        super().__init__(message)
        # reason: the problem type's last segment, e.g. "too-large", "infected".
        self.status, self.reason, self.path, self.message = status, reason, path, message
