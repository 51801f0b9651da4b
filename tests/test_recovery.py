"""Recovery on the real stack: redeliver one, recover failed since a time, replay from Kafka."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from aiokafka.structs import OffsetAndTimestamp

from cdc.kafka import ensure_topic
from models.settings import KafkaSettings
from publisher.jobs.replay import ReplayRunner, start_offset
from publisher.store import ReplayJob, Store
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
        await store.redeliver(delivery.id)
        await until(lambda: len(receiver.verified()) == 2)
        await asyncio.sleep(0.3)
        attempts = await store.attempts_of(delivery.id)
    assert receiver.hits[0].webhook_id == receiver.hits[1].webhook_id
    assert [a.trigger for a in attempts] == ["scheduled", "manual"]


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
    assert {hit.webhook_id for hit in receiver.hits[6:]} == {r.webhook_id for r in recovered}


async def finished(store: Store, job_id: int, timeout: float = 30.0) -> ReplayJob:
    """The job once a publisher has run it to its end."""
    deadline = time.monotonic() + timeout
    while not (job := await store.replay_job(None, job_id)).finished:
        assert time.monotonic() < deadline, f"replay job {job_id} still {job.state}: {job}"
        await asyncio.sleep(0.1)
    return job


async def scheduled_ids(store: Store, integration_id: int) -> set[str]:
    return {d.webhook_id for d in await store.deliveries(integration_id, limit=1000) if d.trigger == "replay"}


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
        job = await store.create_replay_job("acme", ids["hook"], start_offset=0)
        job = await finished(store, job.id)
        await until(lambda: len(receiver.verified()) == 10)
        await asyncio.sleep(0.5)
        replayed = await scheduled_ids(store, ids["hook"])
    expected = {f"{e['eventId']}_i{ids['hook']}" for e in mine}
    assert job.state == "done" and job.scheduled == 5 and job.scanned == 10
    assert replayed == expected
    assert {hit.webhook_id for hit in receiver.hits[5:]} == expected  # the replayed ones, same webhook-ids
    assert len(receiver.hits) == 10


async def test_replay_from_a_timestamp_schedules_exactly_the_later_events(
        servers: Servers, database: str, topic: str) -> None:
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
        job = await finished(store, (await store.create_replay_job("acme", ids["hook"], since=since)).id)
        await until(lambda: len(receiver.verified()) == 7)
        await asyncio.sleep(0.5)
    assert job.state == "done" and job.scheduled == 2
    assert {hit.event["eventId"] for hit in receiver.hits[5:]} == {e["eventId"] for e in later}
    assert len(receiver.hits) == 7


async def test_replay_since_after_every_event_schedules_nothing(servers: Servers, database: str, topic: str) -> None:
    """The bundled broker answers (0, -1) for "no newer record": that is not "start at offset 0"."""
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, ids), \
            publishing(servers, topic, store):
        await produce(servers, topic, [event(n, entity=f"docs/{n}") for n in range(1, 5)])
        await until(lambda: len(receiver.verified()) == 4)
        await asyncio.sleep(1.0)
        job = await finished(store, (await store.create_replay_job("acme", ids["hook"],
                                                                   since=datetime.now(UTC))).id)
        await asyncio.sleep(1.0)
    assert (job.state, job.scheduled) == ("done", 0)
    assert len(receiver.hits) == 4


async def test_replay_applies_the_environment_rule_of_live_delivery(
        servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver, \
            org_with(database, receiver, "prod", environment="production") as (store, ids), \
            publishing(servers, topic, store):
        await produce(servers, topic, [event(1, entity="docs/1")], environment="production")
        await produce(servers, topic, [event(2, entity="docs/2")], environment="staging")
        await until(lambda: len(receiver.verified()) == 1)
        job = await finished(store, (await store.create_replay_job("acme", ids["prod"], start_offset=0)).id)
        await until(lambda: len(receiver.verified()) == 2)
        await asyncio.sleep(0.5)
    assert job.scheduled == 1 and job.scanned == 2
    assert [hit.event["eventId"] for hit in receiver.hits] == [event(1)["eventId"]] * 2


async def test_replay_on_a_busy_topic_ends_where_the_topic_ended_when_it_started(
        servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, ids), \
            publishing(servers, topic, store):
        await produce(servers, topic, [event(n, entity=f"docs/{n % 7}") for n in range(1, 41)])
        await until(lambda: len(receiver.verified()) == 40)
        busy = asyncio.create_task(_keep_producing(servers, topic, first=1000, seconds=8.0))
        await asyncio.sleep(1.0)
        job = await store.create_replay_job("acme", ids["hook"], start_offset=0)
        job = await finished(store, job.id, timeout=20)
        still_producing = not busy.done()
        produced = await busy
    assert job.state == "done" and still_producing  # it ended while the topic kept growing
    assert 40 <= job.scheduled < 40 + produced  # what was there when it started, not what came after


async def _keep_producing(servers: Servers, topic: str, first: int, seconds: float) -> int:
    deadline, n = time.monotonic() + seconds, first
    while time.monotonic() < deadline:
        await produce(servers, topic, [event(n, entity=f"docs/{n % 7}")])
        n += 1
        await asyncio.sleep(0.05)
    return n - first


async def test_a_cancelled_replay_job_stops_at_its_next_batch(servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, ids):
        await ensure_topic(kafka_for(servers, topic))
        await produce(servers, topic, [event(n, entity=f"docs/{n}") for n in range(1, 6)])
        job = await store.create_replay_job("acme", ids["hook"], start_offset=0)
        await store.cancel_replay_job("acme", job.id)
        runner = ReplayRunner(store, kafka_for(servers, topic), timedelta(seconds=30), timedelta(seconds=5))
        state = await runner.run(job)
        job = await store.replay_job("acme", job.id)
        assert await store.replay_jobs("other-org") == []  # an organization sees only its own jobs
    assert state == job.state == "cancelled" and job.finished_at is not None


def test_offsets_for_times_answers_that_mean_nothing_newer() -> None:
    assert start_offset(None) is None  # Apache Kafka
    assert start_offset(OffsetAndTimestamp(0, -1)) is None  # the bundled broker
    assert start_offset(OffsetAndTimestamp(17, 1_700_000_000_000)) == 17
