"""Changing an integration while events flow: every field takes effect within the stated bound, nothing lost.

The bound is ``[publisher] integrations_cache_seconds`` (here 0.2 s) plus the request in flight.
A delivery is recorded ``succeeded`` only for a request that carried it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from control.api.app import create_app
from models.settings import KafkaSettings, Settings
from publisher.settling.positions import committed_positions
from publisher.store import Store
from tests.conftest import Servers
from tests.portal_support import ADMIN, DOCS, admin_headers, signed_in
from tests.receivers import Answer, Hit, ScriptedReceiver, always
from tests.test_delivery import event, org_with, produce, publishing, until, until_taken_in


def carried(hit: Hit) -> list[str]:
    """The webhook-ids a verified request carried: a batch's events, or the request's own."""
    if hit.event is None:
        return []
    if "batchId" in hit.event:
        return [item["webhookId"] for item in hit.event["events"]]
    return [hit.webhook_id]


async def succeeded_ids(store: Store, integration_id: int) -> set[str]:
    return {d.webhook_id for d in await store.deliveries(integration_id, status="succeeded", limit=5000)}


async def test_a_batch_size_change_mid_flow_records_only_what_requests_carried(
        servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver(scripts={"bulk": always(204, delay=0.15)}) as receiver, \
            org_with(database, receiver, "bulk", batch_size=3) as (store, ids), \
            publishing(servers, topic, store, concurrency_per_integration=1, integrations_cache_seconds=0.2):
        await produce(servers, topic, [event(n, entity=f"docs/{n}") for n in range(1, 31)])
        await until(lambda: len(receiver.verified()) >= 2)
        await store.update_integration("acme", ids["bulk"], {"batch_size": 1})
        await until(lambda: sum(len(carried(h)) for h in receiver.verified()) >= 30, timeout=30)
        await asyncio.sleep(0.5)
        recorded = await succeeded_ids(store, ids["bulk"])
    sent = [wid for hit in receiver.verified() for wid in carried(hit)]
    assert len(recorded) == 30 and recorded <= set(sent)  # nothing recorded that no request carried
    assert any(len(carried(h)) == 3 for h in receiver.hits)  # batches of 3 before the change...
    assert all(len(carried(h)) == 1 for h in receiver.hits[-5:])  # ...one event per request after it


async def test_every_field_changes_while_events_flow_and_nothing_is_lost(
        servers: Servers, database: str, topic: str) -> None:
    """url, ordering, concurrency, rate, headers, secret, subscriptions, environment, enabled: in turn, under load."""
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "a") as (store, ids), \
            publishing(servers, topic, store, integrations_cache_seconds=0.2) as publisher:
        receiver.secrets["b"] = receiver.secrets["a"]
        hook = ids["a"]
        changes = [
            {"url": receiver.url("b")}, {"ordering": "none"}, {"concurrency": 2}, {"rate_limit": 50.0},
            {"headers": {"x-tenant": "acme"}}, {"ordering": "entity"}, {"batch_size": 4}, {"rate_limit": None},
        ]
        n = 0
        for change in changes:
            await produce(servers, topic, [event(n := n + 1, entity=f"docs/{n % 5}", seq=n) for _ in range(5)])
            await store.update_integration("acme", hook, change)
        # Rotating without overlap retires the old secret at once: a request still in flight, signed with it,
        # would be answered 2xx by this receiver yet fail its check. So the rotation waits for the flow to settle.
        await until(lambda: len({wid for h in receiver.verified() for wid in carried(h)}) >= n, timeout=30)
        new_secret = await store.rotate_secret("acme", hook, overlap=timedelta(seconds=0))
        receiver.secrets["b"] = new_secret
        await until_taken_in(publisher, store, hook)
        await produce(servers, topic, [event(n := n + 1, entity=f"docs/{n % 5}", seq=n) for _ in range(5)])
        await until(lambda: len({wid for h in receiver.verified() for wid in carried(h)}) >= n, timeout=30)
        await asyncio.sleep(0.5)
        recorded = await succeeded_ids(store, hook)
    delivered = {wid for hit in receiver.verified() for wid in carried(hit)}
    assert len(recorded) == n and recorded <= delivered
    assert any(h.path == "b" and h.headers.get("x-tenant") == "acme" for h in receiver.hits)
    assert receiver.hits[-1].path == "b" and receiver.hits[-1].event is not None  # verified with the new secret


async def test_subscription_and_environment_changes_route_the_next_events(
        servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, ids), \
            publishing(servers, topic, store, integrations_cache_seconds=0.2) as publisher:
        await store.update_integration("acme", ids["hook"], {"events": ["users:*"]})
        await until_taken_in(publisher, store, ids["hook"])
        await produce(servers, topic, [event(1, entity="docs/1")])  # docs: no longer subscribed
        await produce(servers, topic, [event(2, entity="users/2", key="users")])
        await until(lambda: len(receiver.verified()) == 1)
        await store.update_integration("acme", ids["hook"], {"environment": "production"})
        await until_taken_in(publisher, store, ids["hook"])
        await produce(servers, topic, [event(3, entity="users/3", key="users")], environment="staging")
        await produce(servers, topic, [event(4, entity="users/4", key="users")], environment="production")
        await until(lambda: len(receiver.verified()) == 2)
        await asyncio.sleep(0.5)
    assert [h.event["eventId"] for h in receiver.verified()] == [event(2)["eventId"], event(4)["eventId"]]


async def test_a_receiver_back_after_an_outage_gets_its_waiting_retries_at_once(
        servers: Servers, database: str, topic: str) -> None:
    """Schedule 0 s, 60 s: without the catch-up rule the retry would wait a minute."""
    healthy = {"yes": False}
    script = {"hook": lambda path, n: Answer(204 if healthy["yes"] else 503)}
    async with ScriptedReceiver(scripts=script) as receiver, org_with(database, receiver, "hook") as (store, _ids), \
            publishing(servers, topic, store, retry_delays=[0, 60, 60], integrations_cache_seconds=0.2):
        await produce(servers, topic, [event(n, entity=f"docs/{n}") for n in range(1, 4)])
        await until(lambda: len(receiver.hits) == 3)
        await until_all_wait(store, 3)  # the failures are recorded: the three wait a minute
        healthy["yes"] = True
        back = datetime.now(UTC)
        await produce(servers, topic, [event(9, entity="docs/9")])  # a new event succeeds...
        await until(lambda: len(receiver.verified()) == 7, timeout=45)  # ...and the three retries follow at once
        caught_up = datetime.now(UTC)
    assert (caught_up - back).total_seconds() < 40  # well before the minute they were waiting for
    assert {h.webhook_id for h in receiver.hits[4:]} == {h.webhook_id for h in receiver.hits[:3]}


async def until_all_wait(store: Store, deliveries: int) -> None:
    """Wait until ``deliveries`` pending deliveries have their next attempt 30 s or more away."""
    for _ in range(100):
        later = datetime.now(UTC) + timedelta(seconds=30)
        waiting = [d for d in await store.deliveries() if d.status == "pending" and d.next_attempt_at > later]
        if len(waiting) >= deliveries:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{deliveries} deliveries never waited for their next attempt")


async def test_enabling_replays_what_happened_while_disabled_and_nothing_overtakes_it(
        servers: Servers, database: str, topic: str) -> None:
    """Disable, changes flow, enable while more flow: every change arrives, per entity in commit order."""
    async with ScriptedReceiver(scripts={"hook": always(204, delay=0.01)}) as receiver, \
            org_with(database, receiver, "hook") as (store, ids), \
            publishing(servers, topic, store, integrations_cache_seconds=0.2):
        await produce(servers, topic, [event(1, entity="docs/1", seq=1)])
        await until(lambda: len(receiver.verified()) == 1)
        await store.set_enabled(ids["hook"], False, "paused by the test")
        await asyncio.sleep(0.5)
        await produce(servers, topic, [event(n, entity=f"docs/{n % 3}", seq=n) for n in range(2, 30)])
        await asyncio.sleep(0.5)
        job = await store.enable("acme", ids["hook"])
        assert job is not None and job.reason == "enabled"
        await produce(servers, topic, [event(n, entity=f"docs/{n % 3}", seq=n) for n in range(30, 60)])
        await until(lambda: len({h.webhook_id for h in receiver.verified()}) == 59, timeout=40)
        await asyncio.sleep(0.5)
        job = await store.replay_job(None, job.id)
        integration = await store.integration(ids["hook"])
    first: dict[str, list[int]] = {}
    seen: set[str] = set()
    for hit in receiver.verified():
        if hit.webhook_id not in seen:
            seen.add(hit.webhook_id)
            first.setdefault(hit.event["entityPath"], []).append(hit.event["data"]["value"]["properties"]["seq"])
    assert sorted(seq for seqs in first.values() for seq in seqs) == list(range(1, 60))  # lost 0
    assert all(seqs == sorted(seqs) for seqs in first.values()), first  # out of order 0
    assert job.state == "done" and job.scheduled >= 28 and not integration.catching_up


async def test_enable_without_replay_skips_the_gap(servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, ids), \
            publishing(servers, topic, store, integrations_cache_seconds=0.2) as publisher:
        await store.set_enabled(ids["hook"], False, "paused")
        await until_taken_in(publisher, store, ids["hook"])
        await produce(servers, topic, [event(1, entity="docs/1")])
        await until_consumed(publisher.kafka, 1)  # while disabled
        assert await store.enable("acme", ids["hook"], replay=False) is None
        await until_taken_in(publisher, store, ids["hook"])
        await produce(servers, topic, [event(2, entity="docs/2")])
        await until(lambda: len(receiver.verified()) == 1)
        await asyncio.sleep(1.0)
    assert [h.event["eventId"] for h in receiver.hits] == [event(2)["eventId"]]


async def until_consumed(kafka: KafkaSettings, records: int) -> None:
    """Wait until the group has committed past ``records`` records (one record per batch here)."""
    for _ in range(100):
        if sum((await committed_positions(kafka) or {}).values()) >= records:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"the publishers did not consume {records} records")


def _disable_through(front: str, database: str, kafka: KafkaSettings, integration_id: int) -> None:
    """Disable the integration as a user of ``front`` would (the API or the portal)."""
    settings = Settings(store={"dsn": database, "plaintext_secrets": True}, api={"admin_token": ADMIN},
                        kafka=kafka.model_dump(), publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[DOCS])
    with TestClient(create_app(settings)) as client:
        made = client.post("/v1/organizations/acme/keys", json={"name": "backend"}, headers=admin_headers())
        key = {"authorization": f"Bearer {made.json()['key']}"}
        if front == "api":
            answer = client.post(f"/v1/integrations/{integration_id}/disable", headers=key)
        else:
            csrf = signed_in(client, key, "acme")
            answer = client.post(f"/portal/o/acme/integrations/{integration_id}/disable", data={"reason": "paused"},
                                 headers={"x-csrf-token": csrf}, follow_redirects=False)
        assert answer.status_code in (200, 303), answer.text


# The CLI's disable calls the same action (control.actions.disable); its own run adds half a minute.
@pytest.mark.parametrize("front", ["api", "portal"])
async def test_the_catch_up_starts_where_the_consumers_stood_however_far_they_lagged(
        servers: Servers, database: str, topic: str, front: str) -> None:
    """Changes written before the disable but consumed after it (the consumers lagged) are not skipped,
    whichever front end disabled the integration (the portal once lost them)."""
    # Events are counted by id: an attempt that timed out on a loaded machine is sent again (at least once),
    # so the receiver may see one twice.
    def received() -> set[str]:
        return {h.event["eventId"] for h in receiver.verified()}

    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, ids):
        async with publishing(servers, topic, store, integrations_cache_seconds=0.2) as publisher:
            await produce(servers, topic, [event(1, entity="docs/1")])
            await until(lambda: len(received()) == 1)
            kafka = publisher.kafka
        for n in range(2, 12):  # nobody consumes these; one record batch each
            await produce(servers, topic, [event(n, entity=f"docs/{n}")])
        await asyncio.sleep(1.0)
        await asyncio.to_thread(_disable_through, front, database, kafka, ids["hook"])
        async with publishing(servers, topic, store, integrations_cache_seconds=0.2):
            await until_consumed(kafka, 11)  # consumed now, while disabled: nothing recorded
            assert received() == {event(1)["eventId"]}
            await store.enable("acme", ids["hook"])
            await until(lambda: len(received()) == 11, timeout=60)  # a bound for a loaded machine
    assert received() == {event(n)["eventId"] for n in range(1, 12)}
