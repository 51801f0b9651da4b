"""Claims: a delivery waiting in a slow lane stays claimed, so it is not handed out a second time; a backlog
in the store comes back as fast as its lane sends."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import orjson

from publisher.store import AttemptRecord, NewDelivery
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


async def test_a_record_read_again_is_not_sent_again_when_its_delivery_is_logged(servers: Servers, database: str,
                                                                                  topic: str) -> None:
    """A publisher sent a delivery and logged it, but stopped before committing its record: whoever reads the
    record again finds it settled in the store and does not send it again (the crash scenarios used to count
    thousands of such duplicates). A later change of the same entity, in the same partition, still goes."""
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "once") as (store, ids):
        integration = ids["once"]
        sent = NewDelivery(integration, "acme", event(1)["eventId"], f"{event(1)['eventId']}_i{integration}", "docs",
                           "docs/1", "updated", orjson.dumps(event(1)), 0, 0)
        await store.log_first_attempts([AttemptRecord(
            0, integration, 1, "scheduled", datetime.now(UTC), receiver.url("once"), {}, 204, {}, None, 3.0, None,
            "succeeded", None, live=sent)])
        async with publishing(servers, topic, store):
            await produce(servers, topic, [event(1, seq=1), event(2, seq=2)])  # one entity: one partition, in order
            # One entity goes in order: had the first been sent, it would have been answered before the second left.
            await until(lambda: len(receiver.verified()) >= 1)
    assert [hit.webhook_id for hit in receiver.hits] == [f"{event(2)['eventId']}_i{integration}"]
