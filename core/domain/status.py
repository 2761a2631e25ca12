"""Request and application statuses, the monotonic state machine, and the combined status."""

from __future__ import annotations

import enum
from collections.abc import Iterable


class RequestStatus(str, enum.Enum):
    """Status of one agency request (one step of a bundle); DESIGN §2."""

    PENDING = "pending"  # waiting on dependencies
    QUEUED = "queued"  # in the outbox or on the agency queue
    SENT = "sent"  # a worker is calling the agency
    ACCEPTED = "accepted"  # the agency took it; decision later
    APPROVED = "approved"
    REJECTED = "rejected"
    FAILED = "failed"  # technical, after retries or dead-lettered
    SKIPPED = "skipped"  # a dependency did not succeed
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


class ApplicationStatus(str, enum.Enum):
    """Combined status of a bundle."""

    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self is not ApplicationStatus.IN_PROGRESS


TERMINAL = frozenset(
    {RequestStatus.APPROVED, RequestStatus.REJECTED, RequestStatus.FAILED,
     RequestStatus.SKIPPED, RequestStatus.CANCELLED}
)

# Progress order of the non-terminal statuses. A transition may only move forward in this
# order, or from a non-terminal status to any terminal one; so a late or duplicate event
# never moves a request backwards, and a terminal request never changes.
_RANK = {
    RequestStatus.PENDING: 0,
    RequestStatus.QUEUED: 1,
    RequestStatus.SENT: 2,
    RequestStatus.ACCEPTED: 3,
}

# Replay of a dead letter is the one sanctioned way out of ``failed``: back to ``queued``.
_REPLAYABLE = frozenset({RequestStatus.FAILED})


def can_transition(current: RequestStatus, new: RequestStatus, *, replay: bool = False) -> bool:
    """Whether a request in ``current`` may move to ``new``."""
    if replay:
        return current in _REPLAYABLE and new is RequestStatus.QUEUED
    if current.terminal or current is new:
        return False
    if new.terminal:
        return True
    return _RANK[new] > _RANK[current]


def combined_status(statuses: Iterable[RequestStatus], *, cancelled: bool = False) -> ApplicationStatus:
    """The application's status from its requests' statuses (DESIGN §2).

    ``cancelled`` is set once the front office cancelled the application; it then ends
    ``cancelled`` as soon as every request is terminal.
    """
    statuses = list(statuses)
    if not statuses or any(not s.terminal for s in statuses):
        return ApplicationStatus.IN_PROGRESS
    if cancelled:
        return ApplicationStatus.CANCELLED
    if any(s is RequestStatus.FAILED for s in statuses):
        return ApplicationStatus.FAILED
    if any(s is RequestStatus.REJECTED for s in statuses):
        return ApplicationStatus.REJECTED
    if all(s is RequestStatus.APPROVED for s in statuses):
        return ApplicationStatus.COMPLETED
    if any(s is RequestStatus.CANCELLED for s in statuses):
        return ApplicationStatus.CANCELLED
    # Only approved and skipped remain; skipped happens only after a failure or rejection,
    # which is handled above, so this is a defensive default.
    return ApplicationStatus.FAILED
