"""The request state machine and the combined status (DESIGN §2), without any framework."""

import pytest

from core.domain.status import ApplicationStatus as A
from core.domain.status import RequestStatus as R
from core.domain.status import can_transition, combined_status


@pytest.mark.parametrize("current,new", [
    (R.PENDING, R.QUEUED), (R.QUEUED, R.SENT), (R.SENT, R.ACCEPTED), (R.ACCEPTED, R.APPROVED),
    (R.QUEUED, R.APPROVED), (R.SENT, R.REJECTED), (R.PENDING, R.SKIPPED), (R.QUEUED, R.CANCELLED),
    (R.ACCEPTED, R.FAILED),
])
def test_requests_move_forward(current, new):
    assert can_transition(current, new)


@pytest.mark.parametrize("current,new", [
    (R.ACCEPTED, R.SENT), (R.SENT, R.QUEUED), (R.QUEUED, R.PENDING), (R.SENT, R.SENT),
])
def test_a_late_event_never_moves_a_request_backwards(current, new):
    assert not can_transition(current, new)


@pytest.mark.parametrize("terminal", [R.APPROVED, R.REJECTED, R.FAILED, R.SKIPPED, R.CANCELLED])
def test_a_terminal_request_never_changes(terminal):
    assert all(not can_transition(terminal, new) for new in R)


def test_only_a_replay_brings_a_failed_request_back_to_queued():
    assert not can_transition(R.FAILED, R.QUEUED)
    assert can_transition(R.FAILED, R.QUEUED, replay=True)
    assert not can_transition(R.APPROVED, R.QUEUED, replay=True)


def test_combined_status_is_in_progress_while_any_request_is_open():
    assert combined_status([R.APPROVED, R.ACCEPTED]) is A.IN_PROGRESS


def test_combined_status_completed_only_when_all_approved():
    assert combined_status([R.APPROVED, R.APPROVED]) is A.COMPLETED


def test_combined_status_rejected_when_any_rejected_and_none_failed():
    assert combined_status([R.APPROVED, R.REJECTED, R.SKIPPED]) is A.REJECTED


def test_combined_status_failed_wins_over_rejected():
    assert combined_status([R.FAILED, R.REJECTED]) is A.FAILED


def test_combined_status_cancelled_when_the_front_office_cancelled():
    assert combined_status([R.APPROVED, R.CANCELLED], cancelled=True) is A.CANCELLED
    assert combined_status([R.APPROVED, R.ACCEPTED], cancelled=True) is A.IN_PROGRESS
