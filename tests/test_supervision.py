"""Supervision: a loop that dies ends the process with its name, a stop ends every loop at once."""

from __future__ import annotations

import asyncio

import pytest

from models.supervision import LoopCrashed, Supervisor, alongside


async def forever() -> None:
    await asyncio.Event().wait()


async def test_a_crashing_loop_stops_the_others_and_is_named() -> None:
    async def broken() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("the store said no")

    stop = asyncio.Event()
    with pytest.raises(LoopCrashed, match="retry poller crashed: RuntimeError: the store said no"):
        async with Supervisor(stop) as group:
            group.start("consumer", forever)
            group.start("retry poller", broken)
    assert stop.is_set()


async def test_a_loop_that_returns_on_its_own_is_a_crash_too() -> None:
    async def quits() -> None:
        return None

    with pytest.raises(LoopCrashed, match="recorder stopped on its own"):
        async with Supervisor(asyncio.Event()) as group:
            group.start("recorder", quits)


async def test_a_failing_spawned_task_stops_the_process() -> None:
    async def worker() -> None:
        raise ValueError("bad delivery")

    with pytest.raises(LoopCrashed, match="lane worker crashed: ValueError"):
        async with Supervisor(asyncio.Event()) as group:
            group.start("consumer", forever)
            group.spawn(worker(), "lane worker")


async def test_stop_cancels_every_loop_promptly_even_one_that_waits_forever() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    started = loop.time()
    async with Supervisor(stop) as group:
        group.start("waits out an outage", forever)
        group.spawn(forever(), "lane worker")
    assert loop.time() - started < 1.0


async def test_alongside_a_helper_that_fails_fails_the_main_loop_with_its_own_error() -> None:
    async def helper() -> None:
        await asyncio.sleep(0.01)
        raise ConnectionError("lost the walsender")

    with pytest.raises(ConnectionError, match="lost the walsender"):
        await alongside(forever(), {"status reports": helper()})


async def test_alongside_a_helper_that_returns_is_a_crash() -> None:
    async def helper() -> None:
        return None

    with pytest.raises(LoopCrashed, match="heartbeats stopped on its own"):
        await alongside(forever(), {"heartbeats": helper()})


async def test_alongside_ends_with_the_main_loop_and_cancels_the_helpers() -> None:
    helper = asyncio.ensure_future(forever())

    async def main() -> None:
        await asyncio.sleep(0.01)

    await alongside(main(), {"heartbeats": helper})  # type: ignore[dict-item]
    assert helper.cancelled()
