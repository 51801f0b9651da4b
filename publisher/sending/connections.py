"""Open connections, shared fairly: a cap per process and a cap per organization.

Every connection to a receiver is a file descriptor. Without a cap, one organization whose
endpoints hang (many integrations, each with many requests in flight) could open so many
that another organization's attempts fail with "Too many open files". So:

* an organization holds at most ``per_organization`` connections (in use or idle); past that
  one of its own idle connections (to any endpoint) is closed to make room, or else its requests
  wait for one of its own;
* the process holds at most ``total``; when it is full, a new connection first takes the place
  of an idle one (any organization's: idle is only a saving), and otherwise waits. A freed
  place goes to the waiting organization that holds the fewest connections, so a tenant with
  many waiting requests cannot starve one with few.

Waiting happens inside the attempt's timeout: a request that finds no place in time fails as
a timeout and is retried on the schedule, like any other. A connection that comes back from a
request while a request waits for the place it holds (``wanted``) is closed rather than kept idle:
kept, it would serve only requests to its own endpoint, and the waiting one would time out.
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
    """Places for open connections, per organization and in all. ``evict_idle(organization)`` closes the
    longest idle connection (of that organization, or of any when None) and returns its organization, or
    None when none is idle; its place is then taken over here (the caller does not release it)."""

    def __init__(self, total: int, per_organization: int,
                 evict_idle: Callable[[str | None], str | None] = lambda _: None) -> None:
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

    def wanted(self, organization: str) -> bool:
        """Whether closing one of ``organization``'s connections would let a waiting request open one: one of its
        own waits, or the process is full and another organization under its own cap waits."""
        if organization in self._waiting:
            return True
        return self.open >= self.total and any(self._held[o] < self.per_organization for o in self._waiting)

    def _may_open(self, organization: str) -> bool:
        if self._held[organization] >= self.per_organization:
            return self._evicted(organization)  # one of its own idle connections, to another endpoint
        return self.open < self.total or self._evicted(None)

    def _evicted(self, organization: str | None) -> bool:
        """Make room by closing an idle connection (of ``organization``, or any); False when none is idle."""
        evicted = self._evict_idle(organization)
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
            if not (self.open < self.total or self._evicted(None)):
                return
            queue = self._waiting[organization]
            future = queue.popleft()
            if not queue:
                del self._waiting[organization]
            if future.cancelled():
                continue
            self._held[organization] += 1
            future.set_result(None)
