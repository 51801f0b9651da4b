"""Claims: a delivery waiting in a slow lane stays claimed, so it is not handed out a second time; a backlog
in the store comes back as fast as its lane sends."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson

from publisher.store import NewDelivery
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


async def test_a_backlog_in_the_store_drains_without_waiting_for_the_next_poll(servers: Servers, database: str,
                                                                                topic: str) -> None:
    """600 deliveries wait in the store for one integration; one claim offers at most 200 of them. With a
    poll interval of an hour, the rest can only come from the poller claiming again at once because the
    integration had more due (it used to sleep between shares: about 400 a second at most, whatever the lane
    could send)."""
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "backlog") as (store, ids):
        waiting = [NewDelivery(ids["backlog"], "acme", f"evt_{n}", f"evt_{n}_i{ids['backlog']}", "docs", f"docs/{n}",
                               "updated", orjson.dumps(event(n, entity=f"docs/{n}")), 0, n) for n in range(600)]
        await store.park(waiting)
        async with publishing(servers, topic, store, poll_interval=3600.0):
            await until(lambda: len(receiver.verified()) >= 600, timeout=30)
    assert len({hit.webhook_id for hit in receiver.verified()}) == 600
