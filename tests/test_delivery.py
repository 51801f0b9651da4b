"""Delivery behaviour on the real stack: Kafka in, real HTTP out, every request verified."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.trace import Tracer

from cdc.kafka import ensure_topic
from models.settings import KafkaSettings, OperationalSettings, PublisherSettings
from publisher.sending.sender import WebhookSender
from publisher.sending.ssrf import DestinationPolicy
from publisher.service import Publisher, consumer_group_state
from publisher.store import Attempt, Store
from tests.conftest import Servers
from tests.receivers import Answer, ScriptedReceiver, always
from tests.support import wait_for

FAST = {"retry_delays": [0, 0.2, 0.2, 0.2], "retry_jitter": 0.0, "poll_interval": 0.1, "claim_seconds": 5,
        "request_timeout": 2, "allowed_networks": ["127.0.0.1/32"]}


def event(n: int, org: str = "acme", entity: str = "docs/1", seq: int = 0, key: str = "docs") -> dict:
    return {"eventTimestamp": "2026-11-22T12:00:00.000000Z", "operationType": "updated", "entityPath": entity,
            "entityId": entity.rsplit("/", 1)[-1], "entityKey": key, "collectionPath": "docs",
            "organizationId": org, "data": {"value": {"key": entity, "properties": {"seq": seq},
                                                      "createTime": None, "updateTime": None},
                                            "oldValue": None, "updateMask": ["seq"]},
            "eventId": f"evt_{n:016X}_000000", "transaction": {"id": n, "commitLsn": f"0/{n:X}", "index": 0}}


async def produce(servers: Servers, topic: str, events: list[dict], environment: str | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers.bootstrap_servers, acks="all")
    await producer.start()
    headers = [("walhook-environment", environment.encode())] if environment else None
    try:
        for item in events:
            key = f"{item['organizationId']}|{item['entityPath']}".encode()
            await producer.send(topic, orjson.dumps(item), key=key, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


async def until_taken_in(publisher: Publisher, store: Store, integration_id: int, timeout: float = 20.0) -> None:
    """Wait until the publisher's copy of the integration is the store's current one (by ``updated_at``, which
    every change of its config, secrets included, moves): what a test changed now routes and signs."""
    current = (await store.integration(integration_id)).updated_at
    assert current is not None

    def taken_in() -> bool:
        seen = publisher.directory.get(integration_id)
        return seen is not None and seen.updated_at is not None and seen.updated_at >= current
    await until(taken_in, timeout)


@contextlib.asynccontextmanager
async def publishing(servers: Servers, topic: str, store: Store, tracer: Tracer | None = None,
                     operational: OperationalSettings | None = None, **settings: object) -> AsyncIterator[Publisher]:
    kafka = KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=2,
                          consumer_group=f"{topic}.g")
    await ensure_topic(kafka)
    options = PublisherSettings(**{**FAST, **settings})
    async with WebhookSender(options.request_timeout,
                             policy=DestinationPolicy.from_strings(options.allowed_networks)) as sender:
        publisher = Publisher(kafka, options, store, sender, tracer=tracer, operational=operational)
        stop = asyncio.Event()
        task = asyncio.create_task(publisher.run(stop))
        try:
            await until_joined(servers, kafka.consumer_group, task)
            yield publisher
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


async def until_joined(servers: Servers, group: str, task: asyncio.Task[None], timeout: float = 30.0) -> None:
    """Wait until the publisher running as ``task`` has joined ``group`` (the group is Stable)."""
    deadline = time.monotonic() + timeout
    while await consumer_group_state(servers.bootstrap_servers, group) != "Stable":
        assert time.monotonic() < deadline and not task.done(), "the publisher did not join its group"
        await asyncio.sleep(0.2)


async def logged_attempts(store: Store, integration_id: int, count: int, timeout: float = 20.0) -> list[Attempt]:
    """The integration's first delivery's attempts, once ``count`` of them are in the log."""
    deadline = time.monotonic() + timeout
    while True:
        deliveries = await store.deliveries(integration_id)
        attempts = await store.attempts_of(deliveries[-1].id) if deliveries else []
        if len(attempts) >= count:
            return attempts
        assert time.monotonic() < deadline, f"{len(attempts)} attempts logged, not {count}"
        await asyncio.sleep(0.05)


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """``tests.support.wait_for`` with this module's shorter default timeout."""
    await wait_for(predicate, timeout)


@contextlib.asynccontextmanager
async def org_with(database: str, receiver: ScriptedReceiver, *paths: str, org: str = "acme",
                   **integration: object) -> AsyncIterator[tuple[Store, dict[str, int]]]:
    async with Store(database) as store:
        secret = await store.add_organization(org)
        ids = {}
        for path in paths:
            receiver.secrets[path] = secret
            ids[path] = await store.add_integration(org, receiver.url(path), ["docs:*"], **integration)  # type: ignore[arg-type]
        yield store, ids


async def test_failures_are_retried_on_the_schedule_and_logged(servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver(scripts={"flaky": lambda path, n: Answer(500 if n < 2 else 204)}) as receiver, \
            org_with(database, receiver, "flaky") as (store, ids), publishing(servers, topic, store):
        await produce(servers, topic, [event(1)])
        await until(lambda: len(receiver.verified("flaky")) == 3)
        await asyncio.sleep(0.3)
        (delivery,) = await store.deliveries(ids["flaky"])
        attempts = await store.attempts_of(delivery.id)
    assert delivery.status == "succeeded" and delivery.attempts == 3
    assert [a.number for a in attempts] == [1, 2, 3]
    assert [a.response_status for a in attempts] == [500, 500, 204]
    gaps = [(b.started_at - a.started_at).total_seconds() for a, b in itertools.pairwise(attempts)]
    assert all(gap >= 0.2 for gap in gaps)
    assert attempts[0].request_headers["webhook-id"] == f"{event(1)['eventId']}_i{ids['flaky']}"
    assert {hit.webhook_id for hit in receiver.hits} == {attempts[0].request_headers["webhook-id"]}


async def test_an_exhausted_delivery_fails_and_stays_visible(servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver(scripts={"down": always(500, body=b"x" * 40_000)}) as receiver, \
            org_with(database, receiver, "down") as (store, ids), publishing(servers, topic, store):
        await produce(servers, topic, [event(1)])
        await until(lambda: len(receiver.hits) == 4)
        await asyncio.sleep(0.3)
        (delivery,) = await store.deliveries(ids["down"], status="failed")
        attempts = await store.attempts_of(delivery.id)
    assert delivery.attempts == 4
    assert len(attempts[-1].response_body) == 16 * 1024  # the response body is capped


async def test_redirects_are_not_followed(servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver:
        receiver.scripts["moved"] = always(302, headers={"location": receiver.url("target")})
        async with org_with(database, receiver, "moved") as (store, ids), publishing(servers, topic, store):
            await produce(servers, topic, [event(1)])
            await until(lambda: len(receiver.hits) == 4)
            await asyncio.sleep(0.3)
            (delivery,) = await store.deliveries(ids["moved"])
    assert delivery.status == "failed"
    assert {hit.path for hit in receiver.hits} == {"moved"}


async def test_410_gone_disables_the_integration(servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver(scripts={"gone": always(410)}) as receiver, \
            org_with(database, receiver, "gone") as (store, _), publishing(servers, topic, store):
        await produce(servers, topic, [event(1)])
        await until(lambda: len(receiver.hits) == 1)
        await asyncio.sleep(0.5)
        await produce(servers, topic, [event(2, entity="docs/2")])
        await asyncio.sleep(1.0)
        (integration,) = await store.integrations_of("acme", include_disabled=True)
    assert len(receiver.hits) == 1
    assert not integration.enabled and "410 Gone" in (integration.disabled_reason or "")


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured(servers: Servers, database: str, topic: str, status: int) -> None:
    script = {"busy": lambda path, n: Answer(status, headers={"retry-after": "1"}) if n == 0 else Answer(204)}
    async with ScriptedReceiver(scripts=script) as receiver, org_with(database, receiver, "busy") as (store, ids), \
            publishing(servers, topic, store):
        await produce(servers, topic, [event(1)])
        await until(lambda: len(receiver.hits) == 2)
        await asyncio.sleep(0.3)
        (delivery,) = await store.deliveries(ids["busy"])
        first, second = await store.attempts_of(delivery.id)
    # Attempt starts, as logged: arrival times at the receiver also carry each request's own latency.
    assert (second.started_at - first.started_at).total_seconds() >= 1.0  # not the schedule's 0.2 s


async def test_an_integration_failing_continuously_is_disabled_and_success_resets(
        servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver(scripts={"sick": always(500)}) as receiver, \
            org_with(database, receiver, "sick") as (store, ids), \
            publishing(servers, topic, store, disable_after_days=2 / 86400,
                       retry_delays=[0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]):
        await produce(servers, topic, [event(1)])
        await until(lambda: len(receiver.hits) >= 2)
        deadline = time.monotonic() + 15
        integration = await store.integration(ids["sick"])
        while integration.enabled and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            integration = await store.integration(ids["sick"])
    assert not integration.enabled and "failing continuously" in (integration.disabled_reason or "")


async def test_success_resets_the_failure_clock(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        integration = await store.add_integration("acme", "http://127.0.0.1:9/x", ["*"])
        await store.note_health(integration, False, timedelta(days=5))
        assert (await store.integration(integration)).failing_since is not None
        await store.note_health(integration, True, timedelta(days=5))
        assert (await store.integration(integration)).failing_since is None


async def test_a_hanging_endpoint_does_not_hold_back_a_healthy_one(servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver(scripts={"hang": always(204, delay=60)}) as receiver, \
            org_with(database, receiver, "hang", "healthy") as (store, _), \
            publishing(servers, topic, store, request_timeout=30, claim_seconds=90,
                       concurrency_per_integration=2):
        await produce(servers, topic, [event(n, entity=f"docs/{n}") for n in range(1, 41)])
        started = time.time()
        await until(lambda: len(receiver.verified("healthy")) == 40, timeout=20)
        elapsed = time.time() - started
        await produce(servers, topic, [event(n, entity=f"docs/{n}") for n in range(41, 61)])
        await until(lambda: len(receiver.verified("healthy")) == 60, timeout=20)
    # The hanging lane holds 2 requests; held back by it, the healthy one would wait for the 30 s
    # request timeout. (Typically about a second; the bound leaves room for a loaded machine.)
    assert elapsed < 10.0
    assert len([hit for hit in receiver.hits if hit.path == "hang"]) <= 2 * 2  # bounded concurrency


async def test_per_entity_order_holds_while_an_earlier_change_is_retried(
        servers: Servers, database: str, topic: str) -> None:
    def first_fails_twice(path: str, n: int) -> Answer:
        return Answer(500 if n < 2 else 204)
    async with ScriptedReceiver(scripts={"ordered": first_fails_twice}) as receiver, \
            org_with(database, receiver, "ordered") as (store, _), publishing(servers, topic, store):
        await produce(servers, topic, [event(n, entity="docs/x", seq=n) for n in range(1, 6)])
        await until(lambda: len(receiver.verified("ordered")) >= 7)
        await asyncio.sleep(0.5)
    successes = [hit.event["data"]["value"]["properties"]["seq"] for hit in receiver.verified("ordered")
                 if hit.event is not None]
    attempted = [hit.event["data"]["value"]["properties"]["seq"] for hit in receiver.hits if hit.event is not None]
    assert attempted == [1, 1, 1, 2, 3, 4, 5]  # nothing overtook the change being retried
    assert successes[-5:] == [1, 2, 3, 4, 5]


async def test_rotation_signs_with_both_secrets_until_the_old_one_expires(
        servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, ids), \
            publishing(servers, topic, store, integrations_cache_seconds=0) as publisher:
        old = receiver.secrets["hook"]
        new = await store.rotate_secret("acme", overlap=timedelta(seconds=4))
        await until_taken_in(publisher, store, ids["hook"])
        await produce(servers, topic, [event(1)])
        await until(lambda: len(receiver.hits) == 1)
        during = receiver.hits[0]
        receiver.secrets["hook"] = new
        await asyncio.sleep(4.5)
        await produce(servers, topic, [event(2, entity="docs/2")])
        await until(lambda: len(receiver.hits) == 2)
        after = receiver.hits[1]
        receiver.secrets["hook"] = old
        await produce(servers, topic, [event(3, entity="docs/3")])
        await until(lambda: len(receiver.hits) >= 3)
    assert during.signatures == 2 and during.event is not None  # verified with the old secret
    assert after.signatures == 1 and after.event is not None  # verified with the new secret
    assert receiver.hits[2].event is None  # the expired secret no longer verifies


async def test_batches_carry_several_events_with_sequence_metadata(servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver(scripts={"bulk": always(204, delay=0.2)}) as receiver, \
            org_with(database, receiver, "bulk", batch_size=10) as (store, ids), \
            publishing(servers, topic, store, concurrency_per_integration=1):
        events = [event(n, entity=f"docs/{n % 7}", seq=n) for n in range(1, 41)]
        await produce(servers, topic, events)
        await until(lambda: sum(len(h.event["events"]) for h in receiver.verified() if h.event) == 40)
        await asyncio.sleep(0.3)
        succeeded = await store.deliveries(ids["bulk"], status="succeeded")
    batches = [hit.event for hit in receiver.verified() if hit.event is not None]
    assert len(receiver.hits) == len(batches) < 40  # every request verified, several events per request
    assert all(1 <= len(b["events"]) <= 10 for b in batches)
    for batch in batches:
        count = batch["sequence"]["count"]
        assert count == len(batch["events"])
        assert [item["sequence"] for item in batch["events"]] == [{"index": i, "count": count}
                                                                   for i in range(1, count + 1)]
        assert all(item["webhookId"] == f"{item['event']['eventId']}_i{ids['bulk']}" for item in batch["events"])
    seen: dict[str, list[int]] = {}
    for batch in batches:
        for item in batch["events"]:
            seen.setdefault(item["event"]["entityPath"], []).append(item["event"]["data"]["value"]["properties"]["seq"])
    assert all(seqs == sorted(seqs) for seqs in seen.values())  # per entity, commit order
    assert sum(len(seqs) for seqs in seen.values()) == 40 and len(succeeded) == 40


async def test_static_headers_and_user_agent_are_sent(servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver, \
            org_with(database, receiver, "hook", headers={"x-tenant": "acme-prod"}) as (store, ids), \
            publishing(servers, topic, store):
        await produce(servers, topic, [event(1)])
        await until(lambda: len(receiver.hits) == 1)
        logged = await logged_attempts(store, ids["hook"], 1)
    (hit,) = receiver.verified()
    assert hit.headers["x-tenant"] == "acme-prod"
    # The log keeps that it was sent, not its value (custom headers often hold a receiver's credentials).
    assert logged[0].request_headers["x-tenant"] == "(hidden)" and "webhook-signature" in logged[0].request_headers
    assert hit.headers["user-agent"].startswith("walhook/")
    assert hit.headers["content-type"] == "application/json"


async def test_integrations_only_receive_their_environment(servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver, Store(database) as store:
        secret = await store.add_organization("acme")
        for path, environment in (("prod", "production"), ("test", "test"), ("any", None)):
            receiver.secrets[path] = secret
            await store.add_integration("acme", receiver.url(path), ["docs:*"], environment=environment)
        async with publishing(servers, topic, store):
            producer = AIOKafkaProducer(bootstrap_servers=servers.bootstrap_servers)
            await producer.start()
            try:
                for n, environment in ((1, b"production"), (2, b"test"), (3, None)):
                    headers = [("walhook-environment", environment)] if environment else []
                    await producer.send_and_wait(topic, orjson.dumps(event(n, entity=f"docs/{n}")), key=b"k",
                                                 headers=headers)
            finally:
                await producer.stop()
            await until(lambda: len(receiver.verified()) == 5)
            await asyncio.sleep(0.5)
    got = sorted((hit.path, hit.event["transaction"]["id"]) for hit in receiver.verified() if hit.event)
    assert got == [("any", 1), ("any", 2), ("any", 3), ("prod", 1), ("test", 2)]


async def test_the_delivery_answered_410_waits_for_the_integration_to_come_back(
        servers: Servers, database: str, topic: str) -> None:
    """Gone is not delivered: once the receiver is back and the integration enabled, that change goes out."""
    back = {"yes": False}
    script = {"gone": lambda path, n: Answer(204 if back["yes"] else 410)}
    async with ScriptedReceiver(scripts=script) as receiver, org_with(database, receiver, "gone") as (store, ids), \
            publishing(servers, topic, store, integrations_cache_seconds=0.2):
        await produce(servers, topic, [event(1)])
        await until(lambda: len(receiver.hits) == 1)
        await asyncio.sleep(0.5)
        (delivery,) = await store.deliveries(ids["gone"])
        assert delivery.status == "pending"  # not failed: it waits for the integration
        back["yes"] = True
        await store.enable("acme", ids["gone"], replay=False)
        await until(lambda: len(receiver.verified()) == 2)
    assert receiver.hits[1].webhook_id == receiver.hits[0].webhook_id
