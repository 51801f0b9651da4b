"""Chaos scenarios on the real stack: each breaks something on purpose and the ledger must balance.

Every scenario writes ``WALHOOK_CHAOS_CHANGES`` committed changes (default 1,500) and asserts
lost = 0, out of order = 0, nothing phantom, one webhook-id per (event, integration) and every
request verified. The short scenarios (``make test``) combine several faults each; with
``WALHOOK_CHAOS_FULL=1`` (``make chaos``) every fault also runs as a scenario of its own, repeated.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.chaos.backfill import run_backfill_scenario
from tests.chaos.ledger import Subscriber
from tests.chaos.programs import (
    broker_restart,
    kill,
    kill_repeatedly,
    operator_for_gone,
    postgres_restart,
    promotion,
    reconfigure,
    replay,
    schedule,
    store_outage,
    walsender_cut,
)
from tests.chaos.receivers import Behaviour
from tests.chaos.scenario import Run, Scenario, changes_per_scenario, run_scenario
from tests.chaos.servers import persistent_broker_reason

pytestmark = pytest.mark.stack
full = pytest.mark.skipif(os.environ.get("WALHOOK_CHAOS_FULL") != "1",
                          reason="one scenario per fault runs in `make chaos` (WALHOOK_CHAOS_FULL=1)")
persistent = pytest.mark.skipif(persistent_broker_reason() is not None, reason=str(persistent_broker_reason()))

MISBEHAVING = [  # (integration, organization, subscription, behaviour)
    ("fails-500", "acme", "shop/accounts:*", Behaviour("500", after=1, seconds=4)),
    ("hangs", "acme", "shop/orders:*", Behaviour("hang", after=1, seconds=3)),
    ("resets", "acme", "docs/notes:*", Behaviour("reset", after=1, seconds=4)),
    ("busy-429", "acme", "shop/*:*", Behaviour("429", after=1, seconds=4)),
    ("redirects", "globex", "shop/accounts:*", Behaviour("redirect", after=1, seconds=4)),
    ("huge-body", "globex", "shop/orders:*", Behaviour("huge", after=0, seconds=5)),
    ("slow", "globex", "docs/notes:*", Behaviour("slow", after=1, seconds=60, limit=3)),
    ("gone", "globex", "shop/*:updated", Behaviour("gone", after=2, seconds=60, limit=1)),
]


async def check(scenario: Scenario) -> None:
    summary = await run_scenario(scenario)
    assert summary.clean, summary.line() + "\n" + "\n".join(summary.examples[:10])


async def test_processes_killed() -> None:
    """kill -9 of the CDC, of the publisher, of both at once, while the writer writes."""
    await check(Scenario("kill -9 cdc/publisher/both", schedule(
        (1.5, kill("cdc")), (3.0, kill("publisher")), (6.0, kill("cdc", "publisher")), (8.0, kill("cdc"))),
        write_rate=200))


async def test_database_faults() -> None:
    """Walsender cut, store unavailable, Postgres fast and immediate restarts, one after another."""
    await check(Scenario("database faults", schedule(
        (1.5, walsender_cut), (3.0, store_outage(4)), (9.0, postgres_restart("fast", 1)),
        (14.0, postgres_restart("immediate", 1))), write_rate=100))


async def test_misbehaving_receivers() -> None:
    """500, hang, reset, 429, redirect, huge body, slow and 410 receivers (the 410 one re-enabled)."""
    async def program(run: Run) -> None:
        await asyncio.gather(run.writer.done.wait(), operator_for_gone(run))
    subscribers = [Subscriber(name, org, (events,)) for name, org, events, _ in MISBEHAVING]
    await check(Scenario("receivers", program, subscribers=subscribers,
                         behaviours={name: behaviour for name, _, _, behaviour in MISBEHAVING}))


async def test_operators_under_load() -> None:
    """Integrations reconfigured in turn, and replay jobs by offset and by time, while the writer writes."""
    shop, everything = reconfigure("acme-shop"), reconfigure("globex-all")
    steps = [(1.0 + 0.6 * n, shop if n % 2 else everything) for n in range(20)]
    steps += [(2.1, replay("acme-notes", offset=0)), (4.5, replay("globex-orders", back_seconds=2))]
    await check(Scenario("operators under load", schedule(*sorted(steps, key=lambda step: step[0])),
                         write_rate=250))


async def test_primary_crash_and_standby_promotion() -> None:
    """The primary stopped with -m immediate while the workload runs, its physical standby promoted: the
    failover slot carries on there (checked failover-ready before the plug is pulled)."""
    await check(Scenario("primary crash, standby promoted", schedule((2.0, promotion)), write_rate=150,
                         standby=True))


async def test_backfill_while_rows_change_and_the_cdc_is_killed() -> None:
    """3,000 existing rows backfilled to a fresh integration while a tenth of them change; kill -9 mid-backfill."""
    await check_backfill(3_000)


async def check_backfill(rows: int) -> None:
    summary = await run_backfill_scenario(rows, kill_cdc=True)
    print(f"\n{summary.line()}", flush=True)
    assert summary.clean and summary.killed_at is not None and summary.killed_at < rows, (
        summary.line() + "\n" + "\n".join(summary.examples))


@persistent
async def test_broker_restart() -> None:
    """The external broker (it keeps its data) restarted mid-stream; see ``tests.chaos.servers``."""
    await check(Scenario("broker restart", schedule((3.0, broker_restart(3))), write_rate=150,
                         persistent_broker=True))


@full
@pytest.mark.parametrize("which", [("cdc",), ("publisher",), ("both",)])
async def test_kill_9_repeatedly(which: tuple[str, ...]) -> None:
    delay = (1.0, 4.0) if which == ("cdc",) else (4.0, 12.0)
    await check(Scenario(f"kill -9 {which[0]} repeatedly", kill_repeatedly(which, delay, at_least=4),
                         publishers=2 if which == ("publisher",) else 1))


@full
async def test_kill_9_publisher_every_few_seconds_at_2000_changes_per_second() -> None:
    """The delivery path writes nothing before a webhook leaves: a publisher killed at any moment must
    still leave nothing lost and nothing out of order, with two publishers sharing the partitions."""
    await check(Scenario("kill -9 publisher at 2,000/s", kill_repeatedly(("publisher",), (2.0, 5.0), at_least=5),
                         changes=max(changes_per_scenario(), 40_000), write_rate=2000, publishers=2))


@full
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restarts(mode: str) -> None:
    await check(Scenario(f"postgres {mode} restarts", schedule(
        *((at, postgres_restart(mode, 2)) for at in (3.0, 15.0, 27.0)))))


@full
async def test_walsender_cut_repeatedly() -> None:
    await check(Scenario("walsender cut", schedule(*((at, walsender_cut) for at in range(2, 40, 4)))))


@full
async def test_store_unavailable() -> None:
    await check(Scenario("store unavailable", schedule((3.0, store_outage(10)), (25.0, store_outage(5)))))


@full
async def test_integrations_reconfigured_under_load() -> None:
    operators = [reconfigure(name) for name in ("acme-shop", "globex-all", "acme-notes")]
    steps = [(1.0 + 1.5 * n, operators[n % 3]) for n in range(24)]
    await check(Scenario("reconfigured under load", schedule(*steps)))


@full
async def test_replay_jobs_under_load() -> None:
    steps = [(3.0 + 6 * n, replay(("acme-notes", "globex-orders", "acme-shop")[n % 3],
                                  offset=0 if n % 2 == 0 else None, back_seconds=None if n % 2 == 0 else 5))
             for n in range(6)]
    await check(Scenario("replay jobs under load", schedule(*steps)))


@full
@persistent
async def test_broker_restarts() -> None:
    await check(Scenario("broker restarts", schedule((5.0, broker_restart(5)), (25.0, broker_restart(2))),
                         persistent_broker=True))


@full
async def test_backfill_of_100000_rows() -> None:
    await check_backfill(100_000)
