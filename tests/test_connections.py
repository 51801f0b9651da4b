"""Open connections are shared fairly: a cap per process and per organization (publisher.sending.connections)."""

from __future__ import annotations

import asyncio
import time

import pytest

from publisher.sending.connections import ConnectionBudget
from publisher.sending.sender import WebhookSender
from tests.test_sender import LOOPBACK, OK, SECRET, Receiver, answering, read_request, receiving


async def test_an_organization_past_its_cap_waits_for_one_of_its_own() -> None:
    budget = ConnectionBudget(total=10, per_organization=2)
    await budget.acquire("acme")
    await budget.acquire("acme")
    third = asyncio.ensure_future(budget.acquire("acme"))
    await budget.acquire("globex")  # another organization is not held up
    await asyncio.sleep(0)
    assert not third.done() and budget.held("acme") == 2
    budget.release("acme")
    await asyncio.wait_for(third, 1)
    assert budget.held("acme") == 2 and budget.open == 3


async def test_a_freed_place_goes_to_the_waiting_organization_holding_the_fewest() -> None:
    budget = ConnectionBudget(total=4, per_organization=4)
    for _ in range(4):
        await budget.acquire("acme")
    acme_more = [asyncio.ensure_future(budget.acquire("acme")) for _ in range(3)]
    await asyncio.sleep(0)
    globex = asyncio.ensure_future(budget.acquire("globex"))  # waits last, but holds nothing
    await asyncio.sleep(0)
    budget.release("acme")
    await asyncio.wait_for(globex, 1)
    assert not any(f.done() for f in acme_more) and budget.held("globex") == 1 and budget.held("acme") == 3
    for future in acme_more:
        future.cancel()
    await asyncio.gather(*acme_more, return_exceptions=True)
    budget.release("globex")  # nobody waits any more: the cancelled waits were forgotten
    assert budget.open == 3


async def test_an_idle_connection_makes_room_when_the_process_is_full() -> None:
    idle = ["acme"]
    budget = ConnectionBudget(total=1, per_organization=1, evict_idle=lambda _: idle.pop() if idle else None)
    await budget.acquire("acme")
    await asyncio.wait_for(budget.acquire("globex"), 1)  # acme's idle connection was closed for it
    assert budget.held("acme") == 0 and budget.held("globex") == 1


async def test_a_wait_given_up_after_its_place_was_granted_passes_the_place_on() -> None:
    budget = ConnectionBudget(total=1, per_organization=1)
    await budget.acquire("acme")
    waiting = asyncio.ensure_future(budget.acquire("globex"))
    await asyncio.sleep(0)
    budget.release("acme")  # granted to globex...
    waiting.cancel()  # ...which gave up in the same moment
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert budget.open == 0


async def test_hanging_endpoints_of_one_organization_leave_connections_for_another() -> None:
    """The reported failure: one organization's hanging endpoints took every descriptor and another
    organization's attempts failed. Capped, its extra requests wait (and time out) among themselves."""
    open_now, most_open = 0, 0

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, receiver: Receiver) -> None:
        nonlocal open_now, most_open
        open_now += 1
        most_open = max(most_open, open_now)
        try:
            await read_request(reader, receiver)
            await reader.read()  # until walhook closes it (its attempt timed out)
        finally:
            open_now -= 1

    async with receiving(hang) as hanging, receiving(answering(OK)) as healthy, \
            WebhookSender(timeout=2, policy=LOOPBACK, max_connections=8, max_connections_per_organization=4) as sender:
        noisy = [asyncio.ensure_future(sender.attempt(hanging.url(f"/{n % 4}"), [SECRET], f"msg_{n}", b"{}",
                                                      organization="noisy"))
                 for n in range(40)]
        for _ in range(200):
            if hanging.connections >= 4:
                break
            await asyncio.sleep(0.01)
        started = time.monotonic()
        result = await sender.attempt(healthy.url(), [SECRET], "msg_quiet", b"{}", organization="quiet")
        quiet_took = time.monotonic() - started
        noisy_results = await asyncio.gather(*noisy)
    assert result.status == 200 and quiet_took < 1.0
    assert most_open == 4  # the noisy organization never held more than its cap at once
    assert all(r.status is None and r.error == "timed out after 2s" for r in noisy_results)


async def test_an_organization_at_its_cap_closes_an_idle_connection_of_its_own_for_another_endpoint() -> None:
    """Reported by the conditions benchmark: 100 integrations of one organization, each request waited for a
    place its organization's idle connections (to other endpoints) held, until it timed out."""
    async with receiving(answering(OK)) as first, receiving(answering(OK)) as second, \
            WebhookSender(timeout=2, policy=LOOPBACK, max_connections=8, max_connections_per_organization=1) as sender:
        assert (await sender.attempt(first.url(), [SECRET], "msg_1", b"{}", organization="acme")).status == 200
        result = await sender.attempt(second.url(), [SECRET], "msg_2", b"{}", organization="acme")
    assert result.status == 200, result.error


async def test_a_connection_back_from_its_request_goes_to_a_request_waiting_for_its_place() -> None:
    answer = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, receiver: Receiver) -> None:
        for _ in range(10):
            await read_request(reader, receiver)
            await answer.wait()
            writer.write(OK)
            await writer.drain()

    async with receiving(slow) as busy, receiving(answering(OK)) as other, \
            WebhookSender(timeout=3, policy=LOOPBACK, max_connections=8, max_connections_per_organization=2) as sender:
        first = [asyncio.ensure_future(sender.attempt(busy.url(), [SECRET], f"msg_{n}", b"{}", organization="acme"))
                 for n in range(2)]
        while len(busy.requests) < 2:  # both places are in use
            await asyncio.sleep(0.005)
        waiting = asyncio.ensure_future(sender.attempt(other.url(), [SECRET], "msg_w", b"{}", organization="acme"))
        more = [asyncio.ensure_future(sender.attempt(busy.url(), [SECRET], f"msg_m{n}", b"{}", organization="acme"))
                for n in range(4)]  # requests to the same endpoint keep coming, ready to reuse its connections
        await asyncio.sleep(0)
        answer.set()
        result = await waiting
        await asyncio.gather(*first, *more)
    assert result.status == 200, result.error
