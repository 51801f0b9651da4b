"""The delivery log's pruning loop, one of the publisher's supervised loops.

Each round creates the attempts log's partitions for the next days, drops what expired
(``[retention] days`` for successes, ``failed_days`` for failures), and reports the log's
size. Several publishers may prune at once: each step is safe to repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Protocol

from models.errors import StoreError
from models.settings import RetentionSettings
from publisher.metrics import PublisherMetrics
from publisher.store import Pruned
from publisher.store.retention import LogSize

log = logging.getLogger("walhook.publisher")


class PruningStore(Protocol):
    """What pruning needs of the store: the day partitions, the log's size, and the prune itself."""

    async def ensure_partitions(self, days: Iterable[date] | None = None) -> list[str]: ...

    async def log_size(self) -> LogSize: ...

    async def prune(self, keep_succeeded: timedelta, keep_failed: timedelta, batch: int = 5000,
                    now: datetime | None = None) -> Pruned: ...


async def prune_once(store: PruningStore, retention: RetentionSettings) -> Pruned:
    """One round: partitions ahead, then pruning behind."""
    await store.ensure_partitions()
    return await store.prune(timedelta(days=retention.days), timedelta(days=retention.failed_days), retention.batch)


async def prune_loop(store: PruningStore, retention: RetentionSettings, metrics: PublisherMetrics,
                     stop: asyncio.Event) -> None:
    """Prune every ``retention.interval`` seconds until ``stop``; the store being down only delays it."""
    while not stop.is_set():
        try:
            pruned = await prune_once(store, retention)
            metrics.log_pruned(pruned, await store.log_size())
            if pruned.partitions_dropped or pruned.deliveries_deleted or pruned.attempts_deleted:
                log.info("delivery log pruned: %d deliveries, %d attempt partitions (%s), %d attempts",
                         pruned.deliveries_deleted, len(pruned.partitions_dropped),
                         ", ".join(pruned.partitions_dropped) or "none", pruned.attempts_deleted)
        except StoreError as exc:
            log.warning("cannot prune the delivery log yet: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), retention.interval)
