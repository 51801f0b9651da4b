"""What an attempt's result means for its delivery: pure decisions, no I/O, no clock reads.

* 2xx: delivered.
* 410 Gone: the receiver asks to stop; the integration is disabled.
* 3xx: a failure (redirects are not followed); retried like any other failure.
* 429 and 503 with ``Retry-After``: retried no sooner than the receiver asked.
* timeouts, connection errors, other statuses: retried on the schedule.
* schedule used up: the delivery fails for good (dead letter) and stays visible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum

# Standard schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
MAX_RETRY_AFTER = 24 * 3600.0


class Verdict(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"  # schedule exhausted
    GONE = "gone"  # 410: disable the integration


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    delay: float = 0.0  # seconds until the next attempt, for RETRY


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Parse ``Retry-After``: seconds, or an HTTP date. ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return min(max((moment - now).total_seconds(), 0.0), MAX_RETRY_AFTER)


@dataclass
class RetryPolicy:
    """The schedule of waits before attempts 1..n, with +/- ``jitter`` (a fraction) on each."""

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)

    def decide(self, attempt_number: int, status: int | None, retry_after: str | None, now: datetime) -> Decision:
        """What to do after attempt ``attempt_number`` (1-based) ended with ``status`` (None: no response)."""
        if status is not None and 200 <= status < 300:
            return Decision(Verdict.DELIVERED)
        if status == 410:
            return Decision(Verdict.GONE)
        if attempt_number >= len(self.schedule):
            return Decision(Verdict.FAILED)
        delay = self.delay_before(attempt_number + 1)
        if status in (429, 503):
            asked = retry_after_seconds(retry_after, now)
            if asked is not None:
                delay = max(delay, asked)
        return Decision(Verdict.RETRY, delay)

    def delay_before(self, attempt_number: int) -> float:
        base = self.schedule[attempt_number - 1]
        return base * self.rng.uniform(1 - self.jitter, 1 + self.jitter) if base else 0.0
