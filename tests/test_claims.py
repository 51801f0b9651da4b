"""Claims: a delivery waiting in a slow lane stays claimed, so it is not handed out a second time."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.conftest import Servers
from tests.receivers import ScriptedReceiver
from tests.test_delivery import event, org_with, produce, publishing, until


async def test_deliveries_held_longer_than_a_claim_are_sent_once(servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "slow", rate_limit=2.0) as (store, _), \
            publishing(servers, topic, store, claim_seconds=1.0, poll_interval=0.1):
        await produce(servers, topic, [event(n, entity=f"docs/{n}") for n in range(1, 9)])  # 4 s at 2 per second
        await until(lambda: len(receiver.verified()) >= 8, timeout=20)
        await asyncio.sleep(2.0)  # time for a second copy to arrive, were there one
    copies = Counter(hit.webhook_id for hit in receiver.hits)
    assert len(copies) == 8 and set(copies.values()) == {1}, copies
