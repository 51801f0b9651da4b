"""Routing in turns: consumed records wait per organization, and the one that spent least routes next.

Routing is the publisher's CPU-bound step on its event loop, and each organization chooses what
its events cost to route (its integrations and their conditions; ``[api]
max_condition_cost_per_organization`` bounds the tests per event, not per second). Routed in the
order consumed, a batch of one organization's costly records would hold up every other
organization's records behind it. Here each organization's records wait in a queue of their own;
the waiting organization that has spent the least routing time goes next, for one slice.

An organization that starts waiting starts at the least routing time of those already waiting (or
where the last one left off): time idle earns no credit, and a costly past is forgotten. A quiet
organization's record therefore waits at most one slice of another's routing. An organization's
own records keep their order, which is all per-entity order needs (an entity belongs to one
organization).

Pure: no I/O; the caller routes each record and the clock it passes in says how long it took.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

SLICE_SECONDS = 0.002
"""How long one organization routes before the least-spent waiting one is chosen again."""


class RoutingTurns(Generic[Item]):
    """Records waiting to be routed, one queue per organization, served by least routing time spent."""

    def __init__(self, clock: Callable[[], float], slice_seconds: float = SLICE_SECONDS) -> None:
        self._clock = clock
        self._slice = slice_seconds
        self._waiting: dict[str, deque[Item]] = {}
        self._spent: dict[str, float] = {}  # routing seconds, of the organizations waiting now
        self._floor = 0.0  # where an organization that starts waiting starts
        self._count = 0

    def __len__(self) -> int:
        """Records waiting, of every organization."""
        return self._count

    def waiting(self) -> dict[str, int]:
        """Records waiting, per organization that has any."""
        return {organization: len(queue) for organization, queue in self._waiting.items()}

    def add(self, organization: str, item: Item) -> None:
        """``item`` waits behind ``organization``'s earlier ones."""
        queue = self._waiting.get(organization)
        if queue is None:
            queue = self._waiting[organization] = deque()
            self._spent[organization] = min(self._spent.values(), default=self._floor)
        queue.append(item)
        self._count += 1

    def route(self, route: Callable[[Item], Result], seconds: float) -> list[Result]:
        """Route waiting records for about ``seconds`` (at least one record, if any waits), in turns."""
        results: list[Result] = []
        started = self._clock()
        while self._waiting and (not results or self._clock() - started < seconds):
            organization = min(self._spent, key=self._spent.__getitem__)
            self._route_slice(organization, route, results)
        return results

    def _route_slice(self, organization: str, route: Callable[[Item], Result], results: list[Result]) -> None:
        queue = self._waiting[organization]
        started = now = self._clock()
        while queue and now - started < self._slice:
            results.append(route(queue.popleft()))
            self._count -= 1
            now = self._clock()
        self._spent[organization] += now - started
        if not queue:
            self._stop_waiting(organization)

    def _stop_waiting(self, organization: str) -> None:
        """``organization`` has nothing left waiting: the next one to start waiting starts where it left off."""
        self._floor = self._spent.pop(organization)
        del self._waiting[organization]

    def take(self, chosen: Callable[[Item], bool]) -> list[Item]:
        """Take the chosen waiting records out of their turns (those of partitions handed to another publisher,
        routed at once before they go), each organization's in their order."""
        taken: list[Item] = []
        for organization, queue in list(self._waiting.items()):
            kept: deque[Item] = deque()
            for item in queue:
                (taken if chosen(item) else kept).append(item)
            self._waiting[organization] = kept
            if not kept:
                self._stop_waiting(organization)
        self._count -= len(taken)
        return taken
