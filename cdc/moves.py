"""A row that moved to another partition, joined back into the one update it was. Pure: bytes in and out.

An UPDATE that moves a row of a partitioned table into another partition reaches pgoutput as a
DELETE from the old partition and an INSERT into the new one, right after each other (a RELATION
message may come between them, the first time the new partition's changes are sent); through the
partition root (``publish_via_partition_root``) both name the root. Capture would turn them into a
``deleted`` and a ``created`` event. ``PartitionMoves`` holds such a DELETE: when the next row
change is an INSERT of the same root and of the same entity (``same_entity``, told by the caller,
which can read the rows), it hands on one UPDATE message carrying the DELETE's old row and the
INSERT's new one (``U`` relation, ``K``/``O`` old tuple, ``N`` new tuple: the layout pgoutput gives
an update). A DELETE and INSERT of two entities stay a ``deleted`` and a ``created``.
"""

from __future__ import annotations

from collections.abc import Callable

DELETE, INSERT, RELATION, UPDATE = ord("D"), ord("I"), ord("R"), b"U"


class PartitionMoves:
    """Joins DELETE + INSERT of one partitioned table's root into an UPDATE; every other message passes."""

    def __init__(self, roots: set[int], same_entity: Callable[[bytes, bytes], bool]) -> None:
        self.roots = roots  # relation OIDs of the captured partitioned tables
        self._same_entity = same_entity  # (DELETE, INSERT) -> whether both name one entity
        self._held: bytes | None = None

    def feed(self, payload: bytes | memoryview | None) -> tuple[bytes | memoryview | None, ...]:
        """The messages to handle now, in order, for the next one read (``None``: not a logical message)."""
        held = self._held
        if held is not None and payload is not None and payload[0] == RELATION:
            return (payload,)  # the new partition's schema, sent between the two: the DELETE stays held
        self._held = None
        if payload is not None and payload[0] == DELETE and _relation(payload) in self.roots:
            self._held = bytes(payload)
            return () if held is None else (held,)
        if held is None:
            return (payload,)
        if payload is not None and payload[0] == INSERT and payload[1:5] == held[1:5] \
                and self._same_entity(held, bytes(payload)):
            return (UPDATE + held[1:5] + held[5:] + bytes(payload[5:]),)
        return held, payload


def _relation(payload: bytes | memoryview) -> int:
    return int.from_bytes(payload[1:5], "big")
