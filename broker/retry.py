"""Retry and poll schedules of one agency, as delays chosen among the declared delay tiers."""

from __future__ import annotations

from dataclasses import dataclass

from core.model import Agency


def poll_delays(agency: Agency) -> list[float]:
    """The poll waits: interval, interval×backoff, … capped at max_interval (a finite set of tiers)."""
    delays, delay = [], agency.poll_interval
    while delay < agency.poll_max_interval and len(delays) < 20:
        delays.append(round(delay, 3))
        delay *= agency.poll_backoff
        if agency.poll_backoff == 1:
            break
    delays.append(round(min(delay, agency.poll_max_interval), 3))
    return sorted(set(delays))


@dataclass(frozen=True)
class RetryPlan:
    max_attempts: int
    delays: tuple[float, ...]
    polls: tuple[float, ...]

    @classmethod
    def for_agency(cls, agency: Agency) -> RetryPlan:
        return cls(max_attempts=agency.max_attempts, delays=agency.retry_delays,
                   polls=tuple(poll_delays(agency)) if agency.decisions == "poll" else ())

    def retry_delay(self, attempt: int) -> float | None:
        """Delay before attempt ``attempt + 1``, or None when ``attempt`` was the last one."""
        if attempt >= self.max_attempts:
            return None
        return self.delays[min(attempt - 1, len(self.delays) - 1)]

    def poll_delay(self, round_: int) -> float:
        return self.polls[min(round_, len(self.polls) - 1)]
