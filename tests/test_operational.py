"""Operational events: announced by the store with the change they describe, relayed to Kafka, and delivered
like any event to the integrations that name ``walhook/operational`` and to the operator's endpoint."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from models.operational import OPERATIONAL_KEY
from models.settings import KafkaSettings, OperationalSettings
from publisher.sending.signing import generate_secret
from publisher.store import Store
from tests.conftest import Servers
from tests.receivers import Hit, ScriptedReceiver, always
from tests.test_delivery import FAST, event, produce, publishing, until

# Store: what the triggers announce


async def announced(store: Store) -> list[tuple[str, str, dict[str, Any]]]:
    events = await store.claim_operational(100, timedelta(seconds=30))
    await store.relayed([e.id for e in events])
    return [(e.kind, e.subject, e.details) for e in events]


async def test_the_store_announces_each_change_once_with_it(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        hook = await store.add_integration("acme", "http://127.0.0.1:9/a", ["docs:*"])
        assert await announced(store) == []  # a new organization's first secret is no rotation
        await store.set_enabled(hook, False, "the endpoint answered 410 Gone")
        await store.set_enabled(hook, False, "again")  # no change, nothing announced
        await store.enable("acme", hook, replay=False)
        first = await store.rotate_secret("acme", hook, timedelta(0))  # its own, instead of the organization's
        second = await store.rotate_secret("acme", hook, timedelta(0))  # the first stops signing at once
        found = await announced(store)
    integration = f"integrations/{hook}"
    assert [(kind, subject) for kind, subject, _ in found] == [
        ("integration.disabled", integration), ("integration.recovered", integration),
        ("secret.rotated", integration), ("secret.rotated", integration), ("secret.overlap_ended", integration)]
    assert found[0][2]["reason"] == "the endpoint answered 410 Gone"
    assert first not in repr(found) and second not in repr(found)  # never a secret itself


async def test_an_exhausted_delivery_is_announced_but_never_an_operational_one(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        hook = await store.add_integration("acme", "http://127.0.0.1:9/a", ["docs:*", f"{OPERATIONAL_KEY}:*"])
        with psycopg.connect(database, autocommit=True) as conn:
            for key, n in (("docs", 1), (OPERATIONAL_KEY, 2)):
                conn.execute("INSERT INTO walhook.deliveries (integration_id, organization_id, event_id, webhook_id, "
                             "entity_key, entity_path, operation, body) VALUES (%s, 'acme', %s, %s, %s, 'x/1', "
                             "'created', '') ", [hook, f"evt_{n}", f"evt_{n}_i{hook}", key])
            conn.execute("UPDATE walhook.deliveries SET status = 'failed', attempts = 12 WHERE integration_id = %s",
                         [hook])
        found = await announced(store)
    assert [(kind, details["entity_key"]) for kind, _, details in found] == [("delivery.exhausted", "docs")]


async def test_a_job_that_ends_is_announced(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        hook = await store.add_integration("acme", "http://127.0.0.1:9/a", ["docs:*"])
        done = await store.create_replay_job("acme", hook, start_offset=0)
        failed = await store.create_replay_job("acme", hook, start_offset=0)
        await store.finish_replay_job(done.id, "done")
        await store.finish_replay_job(failed.id, "failed", "replay from t failed: broker gone")
        found = await announced(store)
    assert [(kind, subject) for kind, subject, _ in found] == [
        ("replay.finished", f"replay-jobs/{done.id}"), ("replay.failed", f"replay-jobs/{failed.id}")]
    assert found[1][2]["error"] == "replay from t failed: broker gone"


# The real stack: relayed, routed, signed, delivered


def kinds(hits: list[Hit]) -> list[tuple[str, str]]:
    return [(hit.event["operationType"], hit.event["entityPath"]) for hit in hits if hit.event is not None]


async def test_operational_events_reach_subscribers_and_the_operator_signed(servers: Servers, database: str,
                                                                            topic: str) -> None:
    operator_secret = generate_secret()
    scripts = {"gone": always(410), "down": always(500), "opsdown": always(500)}
    async with ScriptedReceiver(scripts=scripts) as receiver, Store(database) as store:
        secret = await store.add_organization("acme")
        receiver.secrets.update({"ops": secret, "operator": operator_secret})
        gone = await store.add_integration("acme", receiver.url("gone"), ["docs:*"])
        down = await store.add_integration("acme", receiver.url("down"), ["docs:*"])
        await store.add_integration("acme", receiver.url("ops"), [f"{OPERATIONAL_KEY}:*"])
        await store.add_integration("acme", receiver.url("opsdown"), [f"{OPERATIONAL_KEY}:delivery.exhausted"])
        settings = OperationalSettings(operator_url=receiver.url("operator"), operator_secret=operator_secret,
                                       relay_seconds=0.1)
        async with publishing(servers, topic, store, operational=settings):
            await produce(servers, topic, [event(1)])
            disabled = ("integration.disabled", f"integrations/{gone}")
            await until(lambda: disabled in kinds(receiver.verified("ops")), 60)
            await until(lambda: disabled in kinds(receiver.verified("operator")), 60)
            await until(lambda: any(kind == "delivery.exhausted" for kind, _ in kinds(receiver.verified("ops"))), 60)
            attempts = len(FAST["retry_delays"])  # type: ignore[arg-type]  # the first attempt and its retries
            await until(lambda: sum(hit.path == "opsdown" for hit in receiver.hits) >= attempts, 60)
            await store.rotate_secret("acme", down, timedelta(hours=1))
            await until(lambda: ("secret.rotated", f"integrations/{down}") in kinds(receiver.verified("ops")), 60)
            await asyncio.sleep(0)  # the relay's last round is in; what came is all there is
            exhausted = [hit.event["data"]["value"]["properties"] for hit in receiver.verified("ops")
                         if hit.event is not None and hit.event["operationType"] == "delivery.exhausted"]
    assert all(details["entity_key"] == "docs" for details in exhausted), exhausted  # never about an operational one
    assert {d["integration_id"] for d in exhausted} == {down}
    assert all(hit.webhook_id.startswith("op_") for hit in receiver.hits if hit.path in ("ops", "operator"))


async def test_a_backfill_that_ends_is_announced_to_its_organization_or_the_operator(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        mine = await store.create_backfill("public.docs", organization_id="acme")
        everyones = await store.create_backfill("public.notes")
        await store.finish_backfill(mine.id, "done")
        await store.finish_backfill(everyones.id, "failed", "the table has no primary key")
        events = await store.claim_operational(10, timedelta(seconds=30))
    assert [(e.organization_id, e.kind, e.subject) for e in events] == [
        ("acme", "backfill.finished", f"backfills/{mine.id}"),
        ("_operator", "backfill.failed", f"backfills/{everyones.id}")]
    assert events[1].details["error"] == "the table has no primary key" and events[1].details["table"] == "public.notes"


async def test_the_relay_waits_for_kafka_instead_of_ending_the_publisher(database: str,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    from publisher.jobs.operational import OperationalRelay
    from walhook.stack import free_port

    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", topic="nowhere")
    async with Store(database) as store:
        relay = OperationalRelay(store, kafka, OperationalSettings(), timedelta(seconds=5))
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop))
        await until(lambda: task.done() or "cannot relay operational events yet" in caplog.text, 60)
        assert not task.done(), task.exception()  # a loop that ended would stop the publisher
        stop.set()
        await asyncio.wait_for(task, 30)
