"""Failed authentications per source address: past a limit, the source waits. Pure, told the clock.

An API key or the admin token guessed at full speed would be tried thousands of times a minute.
Each source address may fail ``limit`` times in any ``window`` seconds; past that every request
from it, right or wrong, is answered 429 with the seconds to wait, until its oldest failure
leaves the window. The table of sources is bounded (the least recently failing one is forgotten
first), so a flood of addresses costs memory it cannot grow past.
"""

from __future__ import annotations

from collections import OrderedDict, deque

MAX_SOURCES = 10_000


class AuthFailures:
    """The recent failures of each source address."""

    def __init__(self, limit: int, window: float = 60.0, max_sources: int = MAX_SOURCES) -> None:
        self.limit = limit
        self.window = window
        self._max_sources = max_sources
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def wait_for(self, source: str, now: float) -> float:
        """Seconds ``source`` must wait before it may try again; 0 when it may try now."""
        times = self._failures.get(source)
        if times is None:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        return times[0] + self.window - now if len(times) >= self.limit else 0.0

    def failed(self, source: str, now: float) -> None:
        """Note one failure of ``source`` at ``now``."""
        times = self._failures.pop(source, None) or deque(maxlen=self.limit)
        times.append(now)
        self._failures[source] = times  # the most recent failure last: the first is forgotten first
        while len(self._failures) > self._max_sources:
            self._failures.popitem(last=False)
