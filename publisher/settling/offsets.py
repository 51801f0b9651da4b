"""Committing consumed offsets in the background, in order, only up to what is settled.

The publisher hands over each partition's committable offset (``publisher.settling.settlement``) whenever
it moves; one committer sends the newest offset of every partition, one commit at a time, so
offsets only ever move forward. A commit the group refuses (a rebalance took the partition away)
is dropped: the new owner reads from the last commit and sends those records' deliveries again,
with the same webhook-ids, and the log takes them as further attempts.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

log = logging.getLogger("walhook.publisher")


class OffsetCommitter:
    """Newest recorded offset per partition, committed by ``run`` as fast as the broker takes them."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self._pending: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._ready = asyncio.Event()

    def recorded(self, offsets: dict[TopicPartition, int]) -> None:
        """Offsets whose records are settled: they may be committed (only ever forward)."""
        for partition, offset in offsets.items():
            if offset > self._committed.get(partition, -1) and offset > self._pending.get(partition, -1):
                self._pending[partition] = offset
                self._ready.set()

    def forget(self, partitions: set[TopicPartition]) -> None:
        """The partitions went to another publisher: nothing more is committed for them here."""
        for partition in partitions:
            self._pending.pop(partition, None)
            self._committed.pop(partition, None)

    async def run(self) -> None:
        """Commit until cancelled; a broker outage only delays commits (the records are re-read at worst)."""
        while True:
            await self._ready.wait()
            await self.commit()

    async def commit(self) -> None:
        """Commit what is pending now (also the last thing done when stopping)."""
        self._ready.clear()
        offsets, self._pending = self._pending, {}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
            self._committed.update(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("offsets not committed (the group rebalanced; the new owner re-reads them): %s", exc)
        except KafkaError as exc:
            log.warning("cannot commit offsets yet: %s", exc)
            for partition, offset in offsets.items():  # keep them, unless newer ones came meanwhile
                self._pending[partition] = max(offset, self._pending.get(partition, 0))
            await asyncio.sleep(0.5)
            self._ready.set()
