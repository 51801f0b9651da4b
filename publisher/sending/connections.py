"""Open connections, shared fairly: a cap per process and a cap per organization.

Every connection to a receiver is a file descriptor. Without a cap, one organization whose
endpoints hang (many integrations, each with many requests in flight) could open so many
that another organization's attempts fail with "Too many open files". So:

* an organization holds at most ``per_organization`` connections (in use or idle); past that
  its requests wait for one of its own;
* the process holds at most ``total``; when it is full, a new connection first takes the place
  of an idle one (any organization's: idle is only a saving), and otherwise waits. A freed
  place goes to the waiting organization that holds the fewest connections, so a tenant with
  many waiting requests cannot starve one with few.

Waiting happens inside the attempt's timeout: a request that finds no place in time fails as
a timeout and is retried on the schedule, like any other.
"""

from __future__ import annotations

import asyncio
import resource
from collections import Counter, deque
from collections.abc import Callable

RESERVED_DESCRIPTORS = 256
"""Descriptors kept for everything else a publisher opens: store and Kafka connections, logs, the API."""


def process_limit(configured: int) -> int:
    """``configured``, lowered to fit under the process's open-files limit (less what the rest needs)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - RESERVED_DESCRIPTORS))


class ConnectionBudget:
    """Places for open connections, per organization and in all. ``evict_idle`` closes the longest idle
    connection (any organization's) and returns its organization, or None when none is idle; its place
    is then taken over here (the caller does not release it)."""

    def __init__(self, total: int, per_organization: int,
                 evict_idle: Callable[[], str | None] = lambda: None) -> None:
        self.total = total
        self.per_organization = per_organization
        self._evict_idle = evict_idle
        self._held: Counter[str] = Counter()
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    @property
    def open(self) -> int:
        return sum(self._held.values())

    def held(self, organization: str) -> int:
        return self._held[organization]

    async def acquire(self, organization: str) -> None:
        """Wait for a place for one more connection of ``organization``."""
        if self._may_open(organization):
            self._held[organization] += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(organization, deque()).append(future)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release(organization)  # granted just as the wait was given up: pass it on
            else:
                queue = self._waiting.get(organization)
                if queue is not None and future in queue:
                    queue.remove(future)
                    if not queue:
                        del self._waiting[organization]
            raise

    def release(self, organization: str) -> None:
        """A connection of ``organization`` closed: its place goes to whoever waits, fairly."""
        self._held[organization] -= 1
        if self._held[organization] <= 0:
            del self._held[organization]
        self._grant()

    def _may_open(self, organization: str) -> bool:
        if self._held[organization] >= self.per_organization:
            return False
        return self.open < self.total or self._evicted()

    def _evicted(self) -> bool:
        """Make room by closing an idle connection; False when none is idle."""
        evicted = self._evict_idle()
        if evicted is None:
            return False
        self._held[evicted] -= 1
        if self._held[evicted] <= 0:
            del self._held[evicted]
        return True

    def _grant(self) -> None:
        """Wake the waiting organization holding the fewest connections, while places are free."""
        while self._waiting:
            ready = [o for o in self._waiting if self._held[o] < self.per_organization]
            if not ready:
                return
            organization = min(ready, key=lambda o: self._held[o])
            if not (self.open < self.total or self._evicted()):
                return
            queue = self._waiting[organization]
            future = queue.popleft()
            if not queue:
                del self._waiting[organization]
            if future.cancelled():
                continue
            self._held[organization] += 1
            future.set_result(None)
