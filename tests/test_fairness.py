"""Tenant fairness on the real stack: a hostile organization with slow integrations and a large backlog
cannot hold back another organization's retries, redeliveries or replays.

The stated bound: with the hostile load below, each of the victim's actions goes out within 10 s.
Starving the victim would mean waiting for the hostile backlog to drain: 200 events to each of six
integrations at one request per 10 s is over half an hour, so the bound leaves room for a loaded
machine and still tells fair from starved by a factor of a hundred.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from publisher import service
from publisher.sending import dispatch
from publisher.store import Store
from tests.conftest import Servers
from tests.receivers import Answer, ScriptedReceiver, always
from tests.test_delivery import event, produce, publishing, until

BOUND_SECONDS = 10.0
HOSTILE_INTEGRATIONS = 6


async def test_a_hostile_backlog_does_not_starve_another_organizations_retries(
        servers: Servers, database: str, topic: str) -> None:
    victim_script = {"victim": lambda path, n: Answer(500 if n == 0 else 204)}
    async with ScriptedReceiver(scripts={**victim_script, "slow": always(204)}) as receiver, \
            Store(database) as store:
        receiver.secrets["victim"] = await store.add_organization("victim")
        receiver.secrets["slow"] = await store.add_organization("hostile")
        victim = await store.add_integration("victim", receiver.url("victim"), ["docs:*"])
        for _ in range(HOSTILE_INTEGRATIONS):  # each sends one request per 10 s at most
            await store.add_integration("hostile", receiver.url("slow"), ["docs:*"], rate_limit=0.1)
        async with publishing(servers, topic, store, lane_capacity=10, retry_delays=[0, 0.5, 0.5],
                              integrations_cache_seconds=0.2):
            backlog = [event(n, org="hostile", entity=f"docs/{n}") for n in range(1, 201)]
            await produce(servers, topic, backlog)  # 1,200 deliveries: lanes full, the rest due in the store
            await asyncio.sleep(1.0)
            started = time.monotonic()
            await produce(servers, topic, [event(1000, org="victim", entity="docs/v")])
            await until(lambda: len(receiver.verified("victim")) == 2, timeout=BOUND_SECONDS * 3)
            retried_after = time.monotonic() - started
            (delivery,) = await store.deliveries(victim)
            started = time.monotonic()
            await store.redeliver(delivery.id, "victim")
            await until(lambda: len(receiver.verified("victim")) == 3, timeout=BOUND_SECONDS * 3)
            redelivered_after = time.monotonic() - started
            started = time.monotonic()
            await store.create_replay_job("victim", victim, start_offset=0)
            await until(lambda: len(receiver.verified("victim")) == 4, timeout=BOUND_SECONDS * 3)
            replayed_after = time.monotonic() - started
            pending = sum(1 for d in await store.deliveries(limit=2000) if d.status == "pending")
    assert pending > 500  # the hostile backlog was really there, waiting in the store
    assert retried_after < BOUND_SECONDS and redelivered_after < BOUND_SECONDS and replayed_after < BOUND_SECONDS, \
        (retried_after, redelivered_after, replayed_after)


async def test_hanging_endpoints_holding_the_unsettled_records_do_not_stop_another_organizations_live_events(
        servers: Servers, database: str, topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Three hanging integrations, each with a lane of 100: 300 records in memory, unsettled, past a cap of 150.
    # Before, the consumer waited at the cap until the hanging requests timed out (here: never within the test),
    # and every organization's live events waited with it.
    monkeypatch.setattr(service, "MAX_UNSETTLED_RECORDS", 150)
    hang = {f"hang{n}": always(204, delay=120) for n in range(3)}
    async with ScriptedReceiver(scripts=hang) as receiver, Store(database) as store:
        receiver.secrets["victim"] = await store.add_organization("victim")
        await store.add_organization("hostile")
        await store.add_integration("victim", receiver.url("victim"), ["docs:*"])
        for n in range(3):
            await store.add_integration("hostile", receiver.url(f"hang{n}"), [f"docs{n}:*"])
        async with publishing(servers, topic, store, lane_capacity=100, concurrency_per_integration=2,
                              request_timeout=60) as _:
            await produce(servers, topic, [event(n, org="hostile", entity=f"docs{n % 3}/{n}", key=f"docs{n % 3}")
                                           for n in range(1, 331)])
            await until(lambda: len(receiver.hits) == 6)  # every hanging lane has its requests in flight
            started = time.monotonic()
            await produce(servers, topic, [event(1000, org="victim", entity="docs/v")])
            await until(lambda: len(receiver.verified("victim")) == 1, timeout=BOUND_SECONDS * 3)
            delivered_after = time.monotonic() - started
            pending = sum(1 for d in await store.deliveries(limit=2000) if d.status == "pending")
    assert pending > 150  # the hostile deliveries wait in the store, settled
    assert delivered_after < BOUND_SECONDS, delivered_after


async def test_a_hanging_endpoints_live_deliveries_wait_in_the_store_not_in_memory(
        servers: Servers, database: str, topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before, a hanging endpoint's lane took live deliveries until it was full (1,000 by default), each holding
    # its record's offset in memory: 40 such lanes brought every organization's intake to the cap.
    monkeypatch.setattr(dispatch, "STALLED_SECONDS", 0.0)  # stalled as soon as every worker waits
    async with ScriptedReceiver(scripts={"hang": always(204, delay=120)}) as receiver, Store(database) as store:
        await store.add_organization("hostile")
        integration = await store.add_integration("hostile", receiver.url("hang"), ["docs:*"])
        async with publishing(servers, topic, store, concurrency_per_integration=2, request_timeout=60) as _:
            await produce(servers, topic, [event(n, org="hostile", entity=f"docs/{n}") for n in (1, 2)])
            await until(lambda: len(receiver.hits) == 2)  # both workers wait on the endpoint
            await produce(servers, topic, [event(n, org="hostile", entity=f"docs/{n}") for n in range(3, 53)])
            deadline, parked = time.monotonic() + BOUND_SECONDS * 3, []
            while len(parked) < 50 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                parked = [d for d in await store.deliveries(integration, limit=100) if d.status == "pending"]
    assert len(parked) == 50, f"{len(parked)} of the 50 later deliveries wait in the store"
