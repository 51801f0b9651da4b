"""Which consumed records are settled, and how far each partition's offset may be committed.

A record is settled once every delivery it produced is settled: its attempt is logged in the
store, or it waits durably in the store (a retry, an entity's later change, an integration that
cannot take it now). A record that produced no delivery (filtered, unrouted, dead-lettered) is
settled as soon as what it left behind is written.

A partition may commit up to its lowest unsettled record (Kafka's committed offset is the next one
to read), so a publisher killed at any moment resends at most the records it had not settled, with
the same webhook-ids. A record is taken (in offset order, as consumed) before it is routed, and
counts as unsettled until it is routed: organizations are routed in turns
(``publisher.routing.turns``), so a partition's records may be routed out of offset order.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

_UNROUTED = -1  # a record taken, not routed yet


class Settlement:
    """Unsettled deliveries per consumed record, per partition (any hashable partition key)."""

    def __init__(self) -> None:
        # partition -> offset -> deliveries not yet settled, in the order the records were taken
        self._open: dict[Hashable, dict[int, int]] = {}
        self._next: dict[Hashable, int] = {}  # partition -> the offset after the last record taken

    def taken(self, partition: Hashable, offset: int) -> None:
        """A record was consumed: unsettled until it is routed (``routed``). Taken in offset order per partition."""
        self._open.setdefault(partition, {})[offset] = _UNROUTED
        self._next[partition] = max(offset + 1, self._next.get(partition, 0))

    def routed(self, partition: Hashable, offset: int, deliveries: int) -> None:
        """The record at ``offset`` produced ``deliveries`` deliveries (0: it is settled now)."""
        records = self._open.get(partition)
        if records is None or records.get(offset) != _UNROUTED:  # let go meanwhile, or routed already
            return
        if deliveries > 0:
            records[offset] = deliveries  # its place among the partition's records stays: the lowest comes first
        else:
            del records[offset]

    def settle(self, partition: Hashable, offset: int) -> None:
        """One delivery of the record at ``offset`` is settled (ignored for a partition no longer held)."""
        records = self._open.get(partition)
        if records is None or records.get(offset, 0) <= 0:
            return
        records[offset] -= 1
        if records[offset] <= 0:
            del records[offset]

    def committable(self) -> dict[Hashable, int]:
        """Per partition, the offset to commit: its lowest unsettled record, or the next one to read."""
        return {partition: next(iter(self._open[partition]), following) if self._open.get(partition) else following
                for partition, following in self._next.items()}

    def unsettled(self, partitions: Iterable[Hashable] | None = None) -> int:
        """Records not settled yet (in ``partitions``, or in all)."""
        chosen = self._open if partitions is None else {p: self._open.get(p, {}) for p in partitions}
        return sum(len(records) for records in chosen.values())

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """The partitions went to another publisher: it reads them from their last commit."""
        for partition in partitions:
            self._open.pop(partition, None)
            self._next.pop(partition, None)
