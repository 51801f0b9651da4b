"""What the publisher's ``/readyz`` checks: its consumer joined the group, and the store answers.

The consumer passes from its first assignment on, even an empty one: a publisher with no partition
(more publishers than partitions) still retries deliveries from the store and takes partitions over
when another leaves, so it is ready. The store is probed with a short timeout at each reading.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from models.health import Check, Probe, Readiness


class PublisherChecks:
    """The publisher's readiness: ``consumer`` is told by the rebalance listener, ``store`` is probed."""

    def __init__(self, group: str, ping: Callable[[], Awaitable[object]]) -> None:
        self.consumer = Check("consumer", f"joining consumer group {group}")
        self.readiness = Readiness(self.consumer, Probe("store", ping))
