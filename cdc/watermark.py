"""The watermark rule of a backfill: which rows of a chunk may go out at its high mark (pure, no I/O).

A chunk is read in one REPEATABLE READ transaction whose snapshot (``pg_current_snapshot()``) is
kept with the rows. Then a high mark is written into the WAL. While the backfill runs, the stream
notes, for every change of the table, the row's key and the id of its transaction (``KeyWatch``).
When the stream reaches the high mark, a row of the chunk goes out only if no change the stream
saw before the mark came from a transaction the snapshot could not see: such a change is newer
than the row read, and the stream carries it (or a newer one) itself. Everything the snapshot saw
committed before the mark, so it is already in Kafka ahead of the row; everything after the mark
goes after it. The surviving rows then go out a slice at a time; a change the stream sees after the
mark removes its row from those still waiting, since it is newer. See docs/guides/backfill.md,
section "How it holds", for the whole argument.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Key = tuple[bytes, ...]  # a row's key columns in their text form, as pgoutput and the chunk query both give them

_WRAP = 1 << 32


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A ``pg_snapshot``: transactions below ``xmin`` are visible, from ``xmax`` on not, ``xip`` were running."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """``'749:753:749,751'`` (the text form of ``pg_current_snapshot()``)."""
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def full_xid(self, xid: int) -> int:
        """The 64-bit id of a 32-bit transaction id seen in the stream (within 2^31 of ``xmax``)."""
        candidate = (self.xmax & ~(_WRAP - 1)) | xid
        if candidate - self.xmax > _WRAP // 2:
            candidate -= _WRAP
        elif self.xmax - candidate > _WRAP // 2:
            candidate += _WRAP
        return candidate

    def sees(self, xid: int) -> bool:
        """Whether the snapshot sees the effects of 32-bit transaction ``xid`` (a committed one)."""
        full = self.full_xid(xid)
        return full < self.xmin or (full < self.xmax and full not in self.xip)


class RecentTransactions:
    """The ids of the last transactions the stream saw, so a watch can tell which came before it began."""

    def __init__(self, size: int = 4096) -> None:
        self._xids: deque[int] = deque(maxlen=size)

    def saw(self, xid: int) -> None:
        self._xids.append(xid)

    def snapshot(self) -> frozenset[int]:
        return frozenset(self._xids)


class KeyWatch:
    """The keys of one table the stream changed, with their transactions, while a backfill runs.

    ``positions`` are the key columns' places in the table's tuples. ``before`` holds the ids of
    the transactions the stream saw before the watch began: one of them still running in a chunk's
    snapshot (its commit was sent before it became visible) makes the chunk unsafe to decide, and
    it is read again. Entries the snapshot of a decided chunk sees are dropped (every later
    snapshot sees them too), so the watch holds about one chunk's worth of changes; past
    ``limit`` keys it overflows and starts over, and the undecided chunk is read again.
    """

    def __init__(self, positions: Sequence[int], before: frozenset[int], limit: int = 1_000_000) -> None:
        self.positions = tuple(positions)
        self.before = before
        self.limit = limit
        self.overflowed = False
        self._changed: dict[Key, set[int]] = {}
        # The decided chunk's rows not yet emitted, by key: a change after the mark removes its row (the
        # change is newer), so the rows can go out a slice at a time while the stream goes on.
        self.pending: dict[Key, int] | None = None

    def __len__(self) -> int:
        return len(self._changed)

    def note(self, xid: int, *rows: Sequence[object] | None) -> None:
        """A change of transaction ``xid``: its new row and/or old row (key columns at least)."""
        for row in rows:
            if row is None:
                continue
            key = tuple(row[i] for i in self.positions)
            if any(not isinstance(value, bytes) for value in key):
                continue  # an old row without the key (no identity) or an unsent TOAST value: the other row has it
            self._changed.setdefault(key, set()).add(xid)  # type: ignore[arg-type]
            if self.pending:
                self.pending.pop(key, None)  # type: ignore[arg-type]
        if len(self._changed) > self.limit:
            self.overflowed = True

    def unsafe(self, snapshot: Snapshot) -> bool:
        """True when this snapshot cannot be judged: the watch overflowed, or a transaction the stream
        saw before the watch began was still running in the snapshot."""
        return self.overflowed or any(snapshot.full_xid(xid) in snapshot.xip for xid in self.before)

    def superseded(self, snapshot: Snapshot) -> set[Key]:
        """Keys changed by a transaction ``snapshot`` does not see: the chunk's rows for them are stale."""
        return {key for key, xids in self._changed.items() if not all(snapshot.sees(xid) for xid in xids)}

    def decided(self, snapshot: Snapshot) -> None:
        """Forget what ``snapshot`` sees; every later chunk's snapshot sees it too."""
        for key in [key for key, xids in self._changed.items() if all(snapshot.sees(xid) for xid in xids)]:
            del self._changed[key]

    def restart(self, before: frozenset[int]) -> None:
        """Start over after an overflow; transactions seen until now count as before the watch."""
        self._changed.clear()
        self.overflowed = False
        self.before = before


def survivors(keys: Iterable[Key], stale: set[Key]) -> list[int]:
    """Positions of the chunk's rows whose key no unseen change touched."""
    return [i for i, key in enumerate(keys) if key not in stale]


@dataclass(slots=True)
class ChunkSizer:
    """Chunk sizes that keep each chunk's query well under the statement time limit.

    The size doubles while a chunk took less than a quarter of ``target`` seconds and halves when
    one took more than ``target`` or held more than ``max_bytes``; a statement timeout halves it
    and the chunk is read again. Below ``minimum`` rows the table cannot be read in time.
    """

    rows: int = 1000
    minimum: int = 10
    maximum: int = 5000
    target: float = 0.5
    max_bytes: int = 16 << 20

    def after(self, seconds: float, size_bytes: int) -> None:
        if seconds > self.target or size_bytes > self.max_bytes:
            self.rows = max(self.minimum, self.rows // 2)
        elif seconds < self.target / 4 and size_bytes < self.max_bytes // 4:
            self.rows = min(self.maximum, self.rows * 2)

    def timed_out(self) -> bool:
        """Halve after a statement timeout; False when already at the minimum (give up)."""
        if self.rows <= self.minimum:
            return False
        self.rows = max(self.minimum, self.rows // 2)
        return True
