"""The claim's and the waiting look's work follow what they ask, not the backlog, whatever the statistics say.

A backlog builds in seconds (an endpoint stops answering) and the statistics follow only when autovacuum
analyzes the table again. Until then they show next to no pending delivery: the fairness benchmark's retry
poller claimed with them for 33 s and 143 s, scanning every due delivery for each candidate's order check.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import psycopg

from publisher.sending.ordering import WAITING_ENTITIES
from publisher.store import AttemptRecord, NewDelivery, Store, utcnow
from publisher.store.deliveries import CLAIM_DUE, claim_parameters

SETTLED = 300
BACKLOG = 6000
CLAIM = 10


def delivery(integration: int, n: int) -> NewDelivery:
    return NewDelivery(integration, "acme", f"evt_{n}", f"evt_{n}_i{integration}", "docs", f"docs/{n}", "updated",
                       b"{}", 0, n)


def succeeded(delivery_id: int, integration: int) -> AttemptRecord:
    return AttemptRecord(delivery_id, integration, 1, "scheduled", utcnow(), "http://127.0.0.1:9/hook", {}, 200,
                         {}, b"", 1.0, None, "succeeded", None)


async def explained_claim(dsn: str, schema: str) -> dict[str, Any]:
    """The claim of ``CLAIM`` deliveries, run under EXPLAIN ANALYZE: its top plan node, with the buffers it read."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = conn.cursor(binary=True)
        await cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + CLAIM_DUE.replace("{s}", f'"{schema}"'),
                             claim_parameters(CLAIM, timedelta(minutes=1)))
        row = await cursor.fetchone()
    assert row is not None
    document = row[0] if isinstance(row[0], list) else orjson.loads(row[0])
    plan: dict[str, Any] = document[0]["Plan"]
    return plan


async def test_a_claim_reads_no_more_than_its_share_of_a_backlog_the_statistics_have_not_seen(database: str) -> None:
    """Analyzed while every delivery was settled, then 6,000 parked: a claim of 10 reads about 550 buffers.

    Before migration 86 the planner, sure from the statistics that almost nothing was pending, checked each
    candidate's entity order by scanning every due delivery: this claim read 889,025 buffers, and 228,667
    with half the backlog (the square of the backlog; with 40,000 parked a claim took about a minute)."""
    async with Store(database) as store:
        await store.add_organization("acme")
        integrations = [await store.add_integration("acme", f"http://127.0.0.1:9/{n}", ["*"]) for n in range(3)]
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
            # The statistics stay as this test makes them: no autovacuum comes between.
            await conn.execute(f'ALTER TABLE "{store.schema}".deliveries SET (autovacuum_enabled = off)')
            settled = await store.create_deliveries([delivery(integrations[0], n) for n in range(SETTLED)],
                                                    timedelta(minutes=1))
            await store.record_attempts([succeeded(d.id, d.integration_id) for d in settled])
            await conn.execute(f'ANALYZE "{store.schema}".deliveries')
        await store.park([delivery(integrations[n % 3], n) for n in range(SETTLED, SETTLED + BACKLOG)])
        plan = await explained_claim(database, store.schema)
    assert plan["Actual Rows"] == CLAIM
    read = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    assert read < BACKLOG / 4, f"a claim of {CLAIM} read {read} buffers of a backlog of {BACKLOG}"


async def test_the_look_for_waiting_entities_probes_each_entity_whatever_the_statistics_say(database: str) -> None:
    """The consumer's look (``WAITING_ENTITIES``, once per routing turn) under the same stale statistics: it
    read every pending delivery once per look (36 ms with 40,000 parked); now it probes each asked entity."""
    async with Store(database) as store:
        await store.add_organization("acme")
        integration = await store.add_integration("acme", "http://127.0.0.1:9/a", ["*"])
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
            await conn.execute(f'ALTER TABLE "{store.schema}".deliveries SET (autovacuum_enabled = off)')
            settled = await store.create_deliveries([delivery(integration, n) for n in range(SETTLED)],
                                                    timedelta(minutes=1))
            await store.record_attempts([succeeded(d.id, d.integration_id) for d in settled])
            await conn.execute(f'ANALYZE "{store.schema}".deliveries')
        await store.park([delivery(integration, n) for n in range(SETTLED, SETTLED + BACKLOG)])
        asked = [(integration, f"docs/{n}") for n in range(SETTLED + BACKLOG - 5, SETTLED + BACKLOG + 15)]
        assert await store.waiting_entities(asked) == set(asked[:5])
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
            cursor = conn.cursor(binary=True)
            await cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
                                 + WAITING_ENTITIES.replace("{s}", f'"{store.schema}"'),
                                 [[i for i, _ in asked], [p for _, p in asked]])
            row = await cursor.fetchone()
    assert row is not None
    plan = (row[0] if isinstance(row[0], list) else orjson.loads(row[0]))[0]["Plan"]
    read = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    assert read < 20 * 10, f"a look at {len(asked)} entities read {read} buffers of a backlog of {BACKLOG}"
