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
