"""The statements that change many deliveries at once lock them in one order (by id), so two of
them running together - a publisher's attempt recorder and its claim keeper, say - wait for each
other instead of deadlocking (a deadlock costs a retry, a second's delay and a warning)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from models.errors import StoreError
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


async def test_the_live_path_and_a_replay_recording_the_same_deliveries_never_deadlock(database: str) -> None:
    """A catch-up job and the consumers may record the same events at once (the seam of an enable): each
    statement inserts in the events' order in their partitions, whatever order it was handed them in."""
    async with Store(database) as live, Store(database) as replay:
        await live.add_organization("acme")
        integration = await live.add_integration("acme", "http://127.0.0.1:9/hook", ["docs:*"])
        deadlocks = []
        for round in range(ROUNDS):
            batch = [replace(d, event_id=f"{d.event_id}_{round}") for d in new_deliveries(integration)]
            results = await asyncio.gather(live.create_deliveries(batch, timedelta(minutes=1)),
                                           replay.schedule_replay(batch[::-1], redeliver=False),
                                           return_exceptions=True)
            deadlocks += [r for r in results if isinstance(r, StoreError)]
        recorded = await live.deliveries(integration, limit=ROUNDS * DELIVERIES)
    assert deadlocks == [] and len(recorded) == ROUNDS * DELIVERIES


async def test_a_redeliver_while_an_attempt_is_in_flight_is_not_undone_by_its_outcome(database: str) -> None:
    """The attempt's success, recorded after the redeliver, must not mark the delivery settled: the
    redeliver asked for a request after that one."""
    async with Store(database) as store:
        await store.add_organization("acme")
        integration = await store.add_integration("acme", "http://127.0.0.1:9/hook", ["docs:*"])
        (delivery,) = await store.create_deliveries(new_deliveries(integration)[:1], timedelta(minutes=1))
        started = utcnow()  # the attempt is in flight...
        await store.redeliver(delivery.id)  # ...when somebody presses redeliver
        await store.record_attempts([AttemptRecord(delivery.id, integration, 1, "scheduled", started,
                                                   "http://127.0.0.1:9/hook", {}, 204, {}, b"", 1.0, None,
                                                   "succeeded", None)])
        (row,) = await store.deliveries(integration)
        due = await store.claim_due(10, timedelta(minutes=1))
        attempts = await store.attempts_of(delivery.id)
    assert row.status == "pending" and row.attempts == 1 and [d.id for d in due] == [delivery.id]
    assert [a.response_status for a in attempts] == [204]  # the attempt is in the log all the same


async def test_two_publishers_claiming_at_once_never_get_the_same_delivery(database: str) -> None:
    """Claims race: one claim commits between another's snapshot and its row locks. The row is no longer
    locked, so SKIP LOCKED takes it, and only conditions on the locked rows themselves are checked again
    against their newest version: the claim must be one of them, or both publishers send the delivery
    (the 2,000/s kill scenario counted thousands of such duplicates)."""
    async with Store(database) as setup:
        await setup.add_organization("acme")
        integration = await setup.add_integration("acme", "http://127.0.0.1:9/a", ["*"])
        await setup.park([NewDelivery(integration, "acme", f"evt_{n}", f"evt_{n}_i{integration}", "docs",
                                      f"docs/{n}", "updated", b"{}", 0, n) for n in range(4000)])
    stores = [Store(database) for _ in range(6)]
    for store in stores:
        await store.__aenter__()
    try:
        claimed: list[int] = []

        async def claimer(store: Store) -> None:
            while batch := await store.claim_due(40, timedelta(minutes=5)):
                claimed.extend(delivery.id for delivery in batch)
        await asyncio.gather(*(claimer(store) for store in stores))
    finally:
        for store in stores:
            await store.__aexit__(None, None, None)
    assert len(claimed) == 4000 and len(set(claimed)) == 4000, f"{len(claimed) - len(set(claimed))} claimed twice"
