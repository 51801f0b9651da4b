"""Committing consumed offsets in the background, in order, only for what is durably recorded.

The consume loop hands over each batch's next offsets once its deliveries are in the store (and
its dead letters written) and goes on with the next batch at once; one committer sends the
newest offset of every partition, one commit at a time, so offsets only ever move forward. A
commit the group refuses (a rebalance took the partition away) is dropped: the new owner reads
from the last commit and records the same deliveries again, which the store ignores (they are
already there), so nothing is lost and nothing is delivered twice because of it.
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
        self._ready = asyncio.Event()

    def recorded(self, offsets: dict[TopicPartition, int]) -> None:
        """Offsets whose records are durably handled: they may be committed."""
        for partition, offset in offsets.items():
            self._pending[partition] = max(offset, self._pending.get(partition, 0))
        self._ready.set()

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
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("offsets not committed (the group rebalanced; the new owner re-reads them): %s", exc)
        except KafkaError as exc:
            log.warning("cannot commit offsets yet: %s", exc)
            for partition, offset in offsets.items():  # keep them, unless newer ones came meanwhile
                self._pending[partition] = max(offset, self._pending.get(partition, 0))
            await asyncio.sleep(0.5)
            self._ready.set()
