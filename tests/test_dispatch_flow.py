"""How deliveries flow without detours: drain rates and backed-up lanes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from publisher.sending.lanes import DrainRate, Lane
from publisher.store import Delivery


def delivery(number: int, entity: str = "docs/1") -> Delivery:
    return Delivery(number, 1, f"evt_{number}_i1", entity, b"{}", 0, datetime.now(UTC))


def test_drain_rate_counts_the_last_window_and_forgets_a_lane_that_stopped() -> None:
    rate = DrainRate(window=1.0)
    rate.note(10.0, 5)
    for step in range(1, 11):
        rate.note(10.0 + step / 10, 10)
    assert 90 <= rate.rate(11.0) <= 110
    assert rate.rate(12.5) == 0.0  # nothing done for longer than the window: not draining


async def test_a_full_lane_is_waited_for_only_while_it_drains_quickly() -> None:
    async def hang(deliveries: list[Delivery], config: object) -> bool:
        await asyncio.Event().wait()
        return True

    lane = Lane(hang, lambda released: None, concurrency=2, capacity=10, ordered=False)
    try:
        for number in range(1, 11):
            assert lane.offer(delivery(number))
        assert not lane.backed_up(within=60.0)  # full, but nothing done: a hanging endpoint looks like this
        now = asyncio.get_running_loop().time()
        lane._drain.note(now - 1.0, 100)
        lane._drain.note(now, 0)  # 100 deliveries done in the last second
        assert lane.backed_up(within=0.1)  # 5 over half full: gone in 0.05 s at that rate
        assert not lane.backed_up(within=0.01)  # ... but not in 0.01 s
    finally:
        await lane.close()
