"""The statements that change many deliveries at once lock them in one order (by id), so two of
them running together - a publisher's attempt recorder and its claim keeper, say - wait for each
other instead of deadlocking (a deadlock costs a retry, a second's delay and a warning)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from publisher.errors import StoreError
from publisher.store import AttemptRecord, NewDelivery, Store, utcnow

ROUNDS = 40
DELIVERIES = 300


def new_deliveries(integration: int) -> list[NewDelivery]:
    return [NewDelivery(integration, "acme", f"evt_{n:016X}_000000", f"evt_{n}_i{integration}", "docs",
                        f"docs/{n}", "updated", b"{}", 0, n) for n in range(DELIVERIES)]


def failed(delivery_id: int, integration: int) -> AttemptRecord:
    return AttemptRecord(delivery_id, integration, 1, "scheduled", utcnow(), "http://127.0.0.1:9/hook", {}, 500,
                         {}, b"", 1.0, "HTTP 500", "pending", utcnow() + timedelta(minutes=5))


async def test_deliveries_changed_together_by_several_statements_never_deadlock(database: str) -> None:
    async with Store(database) as recorder, Store(database) as keeper, Store(database) as healer:
        await recorder.add_organization("acme")
        integration = await recorder.add_integration("acme", "http://127.0.0.1:9/hook", ["docs:*"])
        ids = [d.id for d in await recorder.create_deliveries(new_deliveries(integration), timedelta(minutes=1))]
        deadlocks = []
        for round in range(ROUNDS):
            ordered = ids if round % 2 else ids[::-1]
            results = await asyncio.gather(
                recorder.record_attempts([failed(i, integration) for i in ordered]),
                keeper.extend_claims(ordered[::-1], timedelta(minutes=1)),
                keeper.release(ordered[::-1]) if round % 3 == 0 else asyncio.sleep(0),
                healer.note_health(integration, round % 2 == 0, timedelta(days=5)),
                return_exceptions=True)
            deadlocks += [r for r in results if isinstance(r, StoreError)]
    assert deadlocks == []
