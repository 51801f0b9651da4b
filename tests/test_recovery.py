"""Recovery on the real stack: redeliver one, recover failed since a time, replay from Kafka."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from models.settings import KafkaSettings
from publisher.recovery import ReplayStart, replay
from tests.conftest import Servers
from tests.receivers import Answer, ScriptedReceiver
from tests.test_delivery import event, org_with, produce, publishing, until


def kafka_for(servers: Servers, topic: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic)


async def test_redeliver_sends_the_same_webhook_again_once(servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, ids), \
            publishing(servers, topic, store):
        await produce(servers, topic, [event(1)])
        await until(lambda: len(receiver.verified()) == 1)
        await asyncio.sleep(0.3)
        (delivery,) = await store.deliveries(ids["hook"])
        await store.redeliver(delivery["id"])
        await until(lambda: len(receiver.verified()) == 2)
        await asyncio.sleep(0.3)
        attempts = await store.attempts_of(delivery["id"])
    assert receiver.hits[0].webhook_id == receiver.hits[1].webhook_id
    assert [a["trigger"] for a in attempts] == ["scheduled", "manual"]


async def test_recover_retries_the_failed_deliveries_since_a_time(servers: Servers, database: str, topic: str) -> None:
    healthy = {"yes": False}
    script = {"hook": lambda path, n: Answer(204 if healthy["yes"] else 500)}
    async with ScriptedReceiver(scripts=script) as receiver, org_with(database, receiver, "hook") as (store, ids), \
            publishing(servers, topic, store, retry_delays=[0, 0.1]):
        since = datetime.now(UTC) - timedelta(seconds=1)
        await produce(servers, topic, [event(n, entity=f"docs/{n}") for n in range(1, 4)])
        await until(lambda: len(receiver.hits) == 6)
        await asyncio.sleep(0.5)
        assert len(await store.deliveries(ids["hook"], status="failed")) == 3
        healthy["yes"] = True
        recovered = await store.recover(ids["hook"], since)
        await until(lambda: len(receiver.verified()) == 9 and receiver.hits[-1].at > 0)
        await asyncio.sleep(0.5)
        succeeded = await store.deliveries(ids["hook"], status="succeeded")
    assert len(recovered) == 3 and len(succeeded) == 3
    assert {hit.webhook_id for hit in receiver.hits[6:]} == {r["webhook_id"] for r in recovered}


async def test_replay_from_an_offset_redelivers_exactly_the_integrations_events(
        servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, ids), \
            publishing(servers, topic, store):
        await store.add_organization("other")
        mine = [event(n, entity=f"docs/{n}") for n in range(1, 6)]
        theirs = [event(n, org="other", entity=f"docs/{n}") for n in range(6, 9)]
        unsubscribed = [event(n, entity=f"docs/{n}", key="users") for n in range(9, 11)]
        await produce(servers, topic, mine + theirs + unsubscribed)
        await until(lambda: len(receiver.verified()) == 5)
        scheduled = await replay(store, kafka_for(servers, topic), await store.integration(ids["hook"]),
                                 ReplayStart(offset=0))
        await until(lambda: len(receiver.verified()) == 10)
        await asyncio.sleep(0.5)
    expected = {f"{e['eventId']}_i{ids['hook']}" for e in mine}
    assert {s["webhook_id"] for s in scheduled} == expected
    assert {hit.webhook_id for hit in receiver.hits[5:]} == expected  # the replayed ones, same webhook-ids
    assert len(receiver.hits) == 10


async def test_replay_from_a_timestamp_starts_there(servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, ids), \
            publishing(servers, topic, store):
        await produce(servers, topic, [event(n, entity=f"docs/{n}") for n in range(1, 4)])
        await until(lambda: len(receiver.verified()) == 3)
        await asyncio.sleep(1.5)
        since = datetime.now(UTC)
        await asyncio.sleep(0.2)
        later = [event(n, entity=f"docs/{n}") for n in range(4, 6)]
        await produce(servers, topic, later)
        await until(lambda: len(receiver.verified()) == 5)
        scheduled = await replay(store, kafka_for(servers, topic), await store.integration(ids["hook"]),
                                 ReplayStart(since=since))
        await until(lambda: len(receiver.verified()) == 7)
        await asyncio.sleep(0.5)
    assert {s["event_id"] for s in scheduled} == {e["eventId"] for e in later}
    assert len(receiver.hits) == 7
