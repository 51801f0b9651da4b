"""The recorder: what the store must keep of the delivery path, written in batches after the fact.

Four kinds of writes collect here and go out together every few milliseconds, each kind as one
statement for the whole batch, in this order:

1. live deliveries' first attempts: the delivery's row in the log with its attempt;
2. deliveries that must wait (``park``): stored pending, for the retry poller, with the ones held
   behind an entity still in memory here (below) in the same statement;
3. attempts of deliveries that waited in the store, which move them on;
4. claims given back.

The order matters: a failed head is logged before its entity's followers are parked, so the
store's ordering rule already sees it when they come due. A write that succeeded stays written when a
later one fails: only the rest is tried again. Once a write is durable, the live
deliveries it covered are *settled* (``on_settled``): the consumer may commit past their records.

Until then, the entities whose deliveries are about to wait are known here (``waits_here``):
a live delivery of such an entity must wait too, even though the store does not show it yet.

A delivery parked while an earlier one of its entity is still in a lane here (a full lane, a lane
rebuilt under a new config) is parked *behind* it: stored claimed by this process, so no poller
hands it out, and released once the entity has nothing left in memory (``free``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Protocol

from models.errors import StoreError
from publisher.store import AttemptRecord, Delivery, NewDelivery

log = logging.getLogger("walhook.publisher")

EntityKey = tuple[int, str]  # (integration id, entity path)


class RecorderStore(Protocol):
    """What the recorder writes to the store (``publisher.store`` fills it)."""

    async def log_first_attempts(self, records: Sequence[AttemptRecord]) -> None: ...

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> None: ...

    async def park(self, deliveries: Sequence[NewDelivery], filtered: Mapping[int, int] | None = None, *,
                   behind: Sequence[NewDelivery] = (), hold_for: timedelta = ...) -> list[Delivery]: ...

    async def release(self, delivery_ids: Sequence[int]) -> None: ...

    async def release_held(self, delivery_ids: Sequence[int]) -> None: ...


class Recorder:
    """Collects attempt records, parked deliveries and claim releases; writes them in batches."""

    def __init__(self, store: RecorderStore, interval: float = 0.02, claim: timedelta = timedelta(seconds=60)) -> None:
        self._store = store
        self._interval = interval
        self._claim = claim
        self._first: list[AttemptRecord] = []
        self._parked: list[NewDelivery] = []
        self._behind: list[NewDelivery] = []
        self._held: defaultdict[EntityKey, list[int]] = defaultdict(list)  # parked behind, claimed here
        self._free: set[EntityKey] = set()
        self._writing_behind: list[NewDelivery] = []  # the flush under way is writing these
        self._flushing = asyncio.Lock()  # one flush at a time: the order of writes is the order of events
        self._records: list[AttemptRecord] = []
        self._releases: list[int] = []
        self._filtered: Counter[int] = Counter()
        self._waiting: Counter[EntityKey] = Counter()  # entities with a delivery about to wait in the store
        self._readers = 0
        self._deferred: list[EntityKey] = []  # written while a reader looked at the store: forgotten after it
        self.on_recorded: Callable[[Sequence[AttemptRecord]], None] | None = None  # metrics
        self.on_settled: Callable[[Sequence[NewDelivery]], None] | None = None  # the consumer's settlement

    @property
    def unwritten(self) -> int:
        return len(self._first) + len(self._parked) + len(self._behind) + len(self._records)

    def add(self, record: AttemptRecord) -> None:
        """An attempt's outcome; a live delivery that must try again makes its entity wait from now on."""
        if record.live is not None:
            self._first.append(record)
            if record.status == "pending":
                self._waiting[(record.integration_id, record.live.entity_path)] += 1
        else:
            self._records.append(record)

    def park(self, delivery: NewDelivery, *, behind: bool = False) -> None:
        """A live delivery that must wait in the store; its entity waits from now on. ``behind``: an earlier
        delivery of its entity is still in a lane here; it stays held until ``free``."""
        (self._behind if behind else self._parked).append(delivery)
        self._waiting[(delivery.integration_id, delivery.entity_path)] += 1

    def free(self, key: EntityKey) -> None:
        """The entity has nothing left in memory here: what was parked behind it may go (after the
        entity's last outcome is written: the same flush writes it first)."""
        if key in self._held or any((d.integration_id, d.entity_path) == key
                                    for d in (*self._behind, *self._writing_behind)):
            self._free.add(key)

    def held_ids(self) -> list[int]:
        """Deliveries parked behind an entity in memory: claimed here until it is done."""
        return [i for ids in self._held.values() for i in ids]

    def release(self, delivery_ids: Sequence[int]) -> None:
        self._releases.extend(delivery_ids)

    def count_filtered(self, filtered: Counter[int]) -> None:
        self._filtered.update(filtered)

    def waits_here(self, key: EntityKey) -> bool:
        """Whether a delivery of this entity is about to wait in the store (written or not)."""
        return self._waiting[key] > 0

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        """Around a look at the store's waiting entities and the decisions taken on it: an entity written
        meanwhile stays known here until the look is over (it may have been written after the look)."""
        self._readers += 1
        try:
            yield
        finally:
            self._readers -= 1
            if not self._readers:
                self._forget(self._deferred)
                self._deferred = []

    async def flush(self) -> None:
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        # Everything is taken at one moment: a failed head's record is always in the same flush as (or an
        # earlier one than) its entity's followers parked after it, and the flush writes it first.
        first, self._first = self._first, []
        parked, self._parked = self._parked, []
        behind, self._behind = self._behind, []
        records, self._records = self._records, []
        releases, self._releases = self._releases, []
        filtered, self._filtered = self._filtered, Counter()
        free, self._free = self._free, set()  # an entity freed after this moment: the next flush releases it
        self._writing_behind = behind
        unheld: dict[EntityKey, list[int]] = {}
        written: list[str] = []  # what is durable: a failure puts back only the rest, for the next flush
        try:
            await self._store.log_first_attempts(first)
            written.append("first")
            # Waiting and held deliveries in one statement: a later change parked here never shows in the
            # store without the earlier ones held behind a change still in memory (the poller could take it).
            held = await self._store.park(parked, filtered, behind=behind, hold_for=self._claim)
            written.append("waiting")
            self._hold(held)
            unheld = {key: self._held.pop(key) for key in free if key in self._held}
            await self._store.record_attempts(records)
            written.append("records")
            await self._store.release(releases)
            written.append("releases")
            await self._store.release_held([i for ids in unheld.values() for i in ids])
            written.append("unheld")
        finally:
            self._writing_behind = []
            self._put_back(written, first, parked, behind, filtered, records, releases, free, unheld)
        if self.on_recorded is not None and (first or records):
            self.on_recorded([*first, *records])

    def _put_back(self, written: list[str], first: list[AttemptRecord], parked: list[NewDelivery],
                  behind: list[NewDelivery], filtered: Counter[int], records: list[AttemptRecord],
                  releases: list[int], free: set[EntityKey], unheld: dict[EntityKey, list[int]]) -> None:
        """After a flush: settle what became durable, and keep what did not for the next one, in front."""
        self._written(first if "first" in written else [], parked + behind if "waiting" in written else [])
        if "first" not in written:
            self._first[:0] = first
        if "waiting" not in written:
            self._parked[:0], self._behind[:0] = parked, behind
            self._filtered.update(filtered)
        if "records" not in written:
            self._records[:0] = records
        if "releases" not in written:
            self._releases[:0] = releases
        if "unheld" not in written:
            for key, ids in unheld.items():  # still held (and claimed): released by the next flush
                self._held[key][:0] = ids
            self._free |= free

    def _hold(self, held: list[Delivery]) -> None:
        for delivery in held:
            self._held[(delivery.integration_id, delivery.entity_path)].append(delivery.id)

    def _written(self, first: list[AttemptRecord], parked: list[NewDelivery]) -> None:
        """Live deliveries are durable now: settled, and the store shows the entities that wait."""
        waited = [(r.integration_id, r.live.entity_path) for r in first if r.live and r.status == "pending"]
        waited += [(d.integration_id, d.entity_path) for d in parked]
        if self._readers:
            self._deferred.extend(waited)
        else:
            self._forget(waited)
        if self.on_settled is not None:
            self.on_settled([r.live for r in first if r.live is not None] + parked)

    def _forget(self, keys: list[EntityKey]) -> None:
        for key in keys:
            self._waiting[key] -= 1
            if self._waiting[key] <= 0:
                del self._waiting[key]

    async def run(self) -> None:
        """Flush every ``interval`` until cancelled; the store may be down for a while: keep trying."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except StoreError as exc:
                log.warning("cannot record attempts yet: %s", exc)

    async def close(self, within: float) -> None:
        """A last flush, given up after ``within`` seconds: what is unwritten is sent again or retried."""
        try:
            await asyncio.wait_for(self.flush(), within)
        except (StoreError, TimeoutError) as exc:
            log.warning("stopping with %d attempts unrecorded (they will be sent again): %s", self.unwritten,
                        exc or "the store did not answer in time")
