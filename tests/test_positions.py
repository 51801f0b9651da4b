"""Where the consumer group stands, read on the bundled broker as on Apache Kafka."""

from __future__ import annotations

import asyncio

from publisher.settling.positions import committed_positions
from tests.conftest import Servers
from tests.receivers import ScriptedReceiver
from tests.test_delivery import event, org_with, produce, publishing, until


async def test_the_group_s_committed_offsets_are_read(servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, _), \
            publishing(servers, topic, store) as publisher:
        await produce(servers, topic, [event(n, entity=f"docs/{n}") for n in range(1, 8)])
        await until(lambda: len(receiver.verified()) == 7)
        await asyncio.sleep(1.0)  # the committer has sent the last offsets
        positions = await committed_positions(publisher.kafka)
    assert positions is not None and sum(positions.values()) == 7  # one record per batch: offsets count records


async def test_a_partition_the_group_never_committed_in_stands_at_its_first_record(
        servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, _), \
            publishing(servers, topic, store) as publisher:
        await produce(servers, topic, [event(1, entity="docs/1")])  # one record: one of the two partitions
        await until(lambda: len(receiver.verified()) == 1)
        await asyncio.sleep(1.0)
        positions = await committed_positions(publisher.kafka)
    assert positions is not None and sorted(positions.values()) == [0, 1]
