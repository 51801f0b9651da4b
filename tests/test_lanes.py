"""Lanes without a network: order per entity, release on failure, capacity, batches, rate."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from publisher.sending.lanes import Lane, TokenBucket
from publisher.store import Delivery


def delivery(n: int, entity: str = "x") -> Delivery:
    return Delivery(n, 1, f"evt_{n}_i1", entity, b"{}", 0, datetime.now(UTC))


class Recorder:
    def __init__(self, fail: set[int] | None = None, pause: float = 0.0) -> None:
        self.calls: list[list[int]] = []
        self.released: list[int] = []
        self.fail = fail or set()
        self.pause = pause

    async def attempt(self, deliveries: list[Delivery], config: object = None) -> bool:
        self.calls.append([d.id for d in deliveries])
        await asyncio.sleep(self.pause)
        return not any(d.id in self.fail for d in deliveries)

    def release(self, deliveries: list[Delivery]) -> None:
        self.released.extend(d.id for d in deliveries)


async def settle(lane: Lane) -> None:
    for _ in range(200):
        if lane.size == 0:
            return
        await asyncio.sleep(0.005)


async def test_one_entity_runs_in_order_and_entities_run_in_parallel() -> None:
    recorder = Recorder(pause=0.01)
    lane = Lane(recorder.attempt, recorder.release, concurrency=4, capacity=100, ordered=True)
    for n in range(1, 7):
        assert lane.offer(delivery(n, "x" if n % 2 else "y"))
    await settle(lane)
    await lane.close()
    order = [ids[0] for ids in recorder.calls]
    assert [n for n in order if n % 2] == [1, 3, 5] and [n for n in order if not n % 2] == [2, 4, 6]


async def test_a_failure_releases_the_entitys_later_deliveries() -> None:
    recorder = Recorder(fail={1})
    lane = Lane(recorder.attempt, recorder.release, concurrency=1, capacity=100, ordered=True)
    for n, entity in ((1, "x"), (2, "x"), (3, "y"), (4, "x")):
        lane.offer(delivery(n, entity))
    await settle(lane)
    await lane.close()
    assert [ids[0] for ids in recorder.calls] == [1, 3]
    assert recorder.released == [2, 4] and lane.size == 0


async def test_unordered_lanes_do_not_hold_back() -> None:
    recorder = Recorder(fail={1})
    lane = Lane(recorder.attempt, recorder.release, concurrency=1, capacity=100, ordered=False)
    for n in (1, 2, 3):
        lane.offer(delivery(n, "x"))
    await settle(lane)
    await lane.close()
    assert sorted(ids[0] for ids in recorder.calls) == [1, 2, 3] and recorder.released == []


async def test_capacity_is_a_hard_bound() -> None:
    recorder = Recorder(pause=1.0)
    lane = Lane(recorder.attempt, recorder.release, concurrency=1, capacity=3, ordered=True)
    accepted = [lane.offer(delivery(n, f"e{n}")) for n in range(1, 6)]
    assert accepted == [True, True, True, False, False]
    await lane.close()


async def test_a_lane_knows_which_entities_it_holds() -> None:
    recorder = Recorder(pause=1.0)
    lane = Lane(recorder.attempt, recorder.release, concurrency=1, capacity=10, ordered=True)
    lane.offer(delivery(1, "x"))
    lane.offer(delivery(2, "x"))
    assert lane.has("x") and not lane.has("y") and lane.held_ids() == [1, 2]
    await lane.close()


async def test_a_batch_is_sent_with_the_config_it_was_taken_under() -> None:
    """An update changes what the next batch takes, never what an already taken one carries."""
    seen: list[tuple[list[int], object]] = []
    release = asyncio.Event()

    async def attempt(deliveries: list[Delivery], config: object) -> bool:
        seen.append(([d.id for d in deliveries], config))
        await release.wait()
        return True

    lane = Lane(attempt, lambda _: None, concurrency=1, capacity=100, ordered=False, batch_size=3, config="three")
    lane._workers[0].cancel()
    for n in range(1, 7):
        lane.offer(delivery(n, f"e{n}"))
    lane._workers = [asyncio.create_task(lane._work())]
    await asyncio.sleep(0.01)
    lane.update("one", rate_limit=None, batch_size=1)  # taken under "three": still three in one request
    release.set()
    await settle(lane)
    await lane.close()
    assert seen == [([1, 2, 3], "three"), ([4], "one"), ([5], "one"), ([6], "one")]


async def test_a_retired_lane_finishes_in_flight_and_hands_back_the_rest() -> None:
    recorder = Recorder(pause=0.05)
    lane = Lane(recorder.attempt, recorder.release, concurrency=1, capacity=10, ordered=True)
    for n in (1, 2, 3):
        lane.offer(delivery(n, "x" if n < 3 else "y"))
    for _ in range(100):  # until 1 is in flight
        if recorder.calls:
            break
        await asyncio.sleep(0.005)
    handed_back = lane.retire()
    assert [d.id for d in handed_back] == [2, 3]  # 2 waits behind 1, which finishes here
    assert not lane.offer(delivery(4, "z"))  # retired: takes nothing more
    await asyncio.sleep(0.2)
    assert all(worker.done() for worker in lane._workers)  # its workers ended once idle
    assert [ids[0] for ids in recorder.calls] == [1]


async def test_batches_take_heads_and_followers_in_order() -> None:
    recorder = Recorder()
    lane = Lane(recorder.attempt, recorder.release, concurrency=1, capacity=100, ordered=True, batch_size=4)
    lane._workers[0].cancel()  # fill the lane before the worker looks
    for n, entity in ((1, "x"), (2, "x"), (3, "y"), (4, "x"), (5, "z"), (6, "y")):
        lane.offer(delivery(n, entity))
    lane._workers = [asyncio.create_task(lane._work())]
    await settle(lane)
    await lane.close()
    assert recorder.calls[0] == [1, 2, 4, 3]  # x's changes in order, then y's head: at most 4
    assert sorted(n for call in recorder.calls for n in call) == [1, 2, 3, 4, 5, 6]


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, burst=2.0)
    assert bucket.wait_time(0.0) == 0 and bucket.wait_time(0.0) == 0
    assert bucket.wait_time(0.0) == 0.5
    assert bucket.wait_time(0.5) == 0


async def test_a_rate_limit_removed_while_a_worker_waits_for_it_lets_the_worker_go() -> None:
    recorder = Recorder()
    lane = Lane(recorder.attempt, recorder.release, concurrency=1, capacity=10, ordered=False, rate_limit=0.1)
    for n in (1, 2):
        lane.offer(delivery(n, f"e{n}"))
    await asyncio.sleep(0.05)  # 1 went; 2 waits ten seconds for its token
    lane.update(None, rate_limit=None, batch_size=1)
    await settle(lane)
    assert not any(worker.done() for worker in lane._workers)  # no worker died of the change
    await lane.close()
    assert [ids[0] for ids in recorder.calls] == [1, 2]


async def test_draining_a_partition_keeps_what_is_in_flight_and_the_rest_in_order() -> None:
    recorder = Recorder(pause=0.2)
    idle: list[str] = []
    lane = Lane(recorder.attempt, recorder.release, concurrency=1, capacity=100, ordered=True,
                idle=idle.append)
    for n, entity in ((1, "x"), (2, "x"), (3, "y"), (4, "x")):
        lane.offer(delivery(n, entity))
    for _ in range(100):
        if recorder.calls:
            break
        await asyncio.sleep(0.005)
    taken = lane.drain(lambda d: d.id in (2, 3))  # 1 is in flight: never taken back
    assert [d.id for d in taken] == [2, 3] and lane.size == 2 and lane.has("x") and not lane.has("y")
    await settle(lane)
    await lane.close()
    assert [ids[0] for ids in recorder.calls] == [1, 4] and idle == ["y", "x"]  # y at once: nothing of it left


async def test_a_lane_whose_every_worker_hangs_is_stalled_until_an_attempt_finishes() -> None:
    answer = asyncio.Event()
    started: list[int] = []

    async def hanging(deliveries: list[Delivery], config: object = None) -> bool:
        started.extend(d.id for d in deliveries)
        await answer.wait()
        return True
    lane = Lane(hanging, lambda _: None, concurrency=2, capacity=100, ordered=False)
    lane.offer(delivery(1))
    while not started:
        await asyncio.sleep(0.001)
    assert not lane.stalled(0.0)  # a worker is free: the lane takes more
    lane.offer(delivery(2))
    while len(started) < 2:
        await asyncio.sleep(0.001)
    assert lane.stalled(0.0) and not lane.stalled(3600.0)  # every worker waits: stalled, once it lasts
    answer.set()
    while lane.size:
        await asyncio.sleep(0.001)
    assert not lane.stalled(0.0)
    await lane.close()
