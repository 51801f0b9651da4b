"""Reconnect backoff as a pure object: it is told the time, it never reads a clock."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Exponential backoff with full jitter, reset after a connection stays up long enough.

    Defaults: first wait up to 0.5 s, doubling to at most 30 s; a connection that lasted
    60 s counts as healthy and resets the sequence.
    """

    initial: float = 0.5
    maximum: float = 30.0
    healthy_after: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    _attempt: int = 0
    _connected_at: float | None = None

    def connected(self, now: float) -> None:
        self._connected_at = now

    def next_delay(self, now: float) -> float:
        """Seconds to wait before the next attempt, given that the last one failed at ``now``."""
        if self._connected_at is not None and now - self._connected_at >= self.healthy_after:
            self._attempt = 0
        self._connected_at = None
        ceiling = min(self.maximum, self.initial * 2 ** self._attempt)
        self._attempt += 1
        return self.rng.uniform(ceiling / 2, ceiling)
