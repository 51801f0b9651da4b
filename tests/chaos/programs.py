"""What each scenario breaks, and when: fault programs run alongside the writer.

A program gets the ``Run`` and returns when its faults are over (at the earliest when the writer is
done). Moments are seconds after writing began. ``operator_for_gone`` is the operator's answer to a
410: enable it again (which replays what it missed).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from publisher.store import Store
from tests.chaos.faults import (
    crash_primary_and_promote,
    cut_walsender,
    restart_broker,
    restart_postgres,
    store_unavailable,
    wait_failover_ready,
)
from tests.chaos.ledger import Ledger
from tests.chaos.processes import Supervised, kill_loop
from tests.chaos.scenario import Fault, Run

Step = tuple[float, Callable[[Run], Awaitable[object]]]


def schedule(*steps: Step) -> Fault:
    """Run each step at its moment (one after another), then wait for the writer."""
    async def program(run: Run) -> None:
        began = time.monotonic()
        for at, step in steps:
            await asyncio.sleep(max(0.0, began + at - time.monotonic()))
            run.note(f"{at:4.0f}s {getattr(step, '__name__', 'step')}: {await step(run) or 'done'}")
        await run.writer.done.wait()
    return program


def kill(*which: str) -> Callable[[Run], Awaitable[object]]:
    """A step that SIGKILLs the named processes (``cdc``, ``publisher``) together."""
    async def step(run: Run) -> str:
        targets = _targets(run, which)
        await asyncio.gather(*(target.kill() for target in targets))
        return f"killed {', '.join(t.name for t in targets)} with -9"
    step.__name__ = f"kill {'+'.join(which)}"
    return step


def _targets(run: Run, which: tuple[str, ...]) -> list[Supervised]:
    return ([run.cdc] if "cdc" in which else []) + (run.publishers if "publisher" in which else [])


def kill_repeatedly(which: tuple[str, ...], delay: tuple[float, float], at_least: int) -> Fault:
    """SIGKILL a random one of ``which`` (or all of them at once for ``both``) every ``delay`` seconds."""
    async def program(run: Run) -> None:
        targets = _targets(run, which)
        if "both" in which:
            targets = [_Both(_targets(run, ("cdc", "publisher")))]  # type: ignore[list-item]
        kills = await kill_loop(targets, run.rng, run.writer.done, delay, at_least)
        run.note(f"{kills} kill -9 of {'/'.join(which)}")
    return program


class _Both:
    """Kills the CDC and every publisher at the same moment."""

    def __init__(self, targets: list[Supervised]) -> None:
        self.targets = targets

    async def kill(self) -> None:
        await asyncio.gather(*(target.kill() for target in self.targets))


def broker_restart(down: float) -> Callable[[Run], Awaitable[object]]:
    async def step(run: Run) -> str:
        await restart_broker(run.servers, down)
        return f"broker stopped for {down:g}s and started again"
    step.__name__ = "broker restart"
    return step


def postgres_restart(mode: str, down: float) -> Callable[[Run], Awaitable[object]]:
    async def step(run: Run) -> str:
        await restart_postgres(run.servers, mode, down)
        return f"postgres {mode} shutdown, down {down:g}s, started again"
    step.__name__ = f"postgres {mode} restart"
    return step


async def walsender_cut(run: Run) -> str:
    return "walsender terminated" if await cut_walsender(run.servers.dsn("app")) else "no walsender to cut"


async def promotion(run: Run) -> str:
    """Once the slot is failover-ready on the standby (``walhook status`` must say so too): crash the primary
    with ``-m immediate`` and promote the standby; walhook finds the new primary through its DSN."""
    ready = await wait_failover_ready(run.servers)
    status = await _cli(run, ["status", "--json"], whole=True)
    if '"failover":"ok"' not in status:
        raise AssertionError(f"walhook status does not report the slot failover-ready: {status}")
    await crash_primary_and_promote(run.servers)
    return f"standby {ready}; primary crashed (-m immediate), standby promoted"


def store_outage(seconds: float) -> Callable[[Run], Awaitable[object]]:
    async def step(run: Run) -> str:
        await store_unavailable(run.servers.dsn("postgres"), seconds)
        return f"store database refused connections for {seconds:g}s"
    step.__name__ = "store unavailable"
    return step


async def operator_for_gone(run: Run, name: str = "gone", timeout: float = 120.0) -> None:
    """After the traffic: ``walhook integrations enable`` for the integration its receiver's 410 disabled.

    Enabling replays, by default, what happened while it was disabled, and no newer change overtakes
    the replayed ones: no manual replay is needed.
    """
    await run.writer.done.wait()
    others = Ledger(run.writer.record.changes, [s for s in run.subscribers if s.name != name])
    deadline = time.monotonic() + timeout
    while others.outstanding(run.receiver.hits) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)  # the publisher has consumed everything once the others are complete
    integration = next(s.id for s in run.subscribers if s.name == name)
    async with Store(run.servers.dsn("store")) as store:
        state = await store.integration(integration)
    run.note(f"integration {name} enabled={state.enabled} ({state.disabled_reason})")
    args = ["integrations", "enable", str(integration)]
    run.note(f"walhook {' '.join(args)}: {await _cli(run, args)}")


async def _cli(run: Run, args: list[str], whole: bool = False) -> str:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "walhook", *args, "--config",
                                                   str(run.config), stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate()
    if whole:
        return output.decode(errors="replace")
    return f"exit {process.returncode}: {output.decode(errors='replace').strip().splitlines()[-1:]}"


def reconfigure(name: str) -> Callable[[Run], Awaitable[object]]:
    """A step that changes integration ``name``'s next setting, in turn, as an operator would through the API.

    Batch size up and down, URL (the same receiver, another query), disable then enable (with its
    catch-up replay), rate limit on and off, concurrency, and a rotation of its organization's secret
    with an overlap (the receiver keeps verifying with the old secret, which signs alongside the new one).
    """
    changes: list[dict[str, object] | str] = [
        {"batch_size": 10}, {"url": "?v=2"}, "disable", "enable", {"rate_limit": 40.0}, {"batch_size": 1},
        {"concurrency": 2}, "rotate", {"rate_limit": None}, {"batch_size": 3}]
    turn = {"n": 0}

    async def step(run: Run) -> str:
        change = changes[turn["n"] % len(changes)]
        turn["n"] += 1
        subscriber = next(s for s in run.subscribers if s.name == name)
        async with Store(run.servers.dsn("store")) as store:
            if change == "disable":
                await store.set_enabled(subscriber.id, False, "disabled by the chaos operator")
            elif change == "enable":
                job = await store.enable(subscriber.organization, subscriber.id)
                return f"{name}: enabled (catch-up replay job {job.id if job else None})"
            elif change == "rotate":
                await store.rotate_secret(subscriber.organization, None, timedelta(hours=1))
            else:
                assert isinstance(change, dict)
                if "url" in change:
                    change = {"url": run.receiver.url(name) + str(change["url"])}
                await store.update_integration(subscriber.organization, subscriber.id, change)
        return f"{name}: {change}"
    step.__name__ = f"reconfigure {name}"
    return step


def replay(name: str, offset: int | None = None, back_seconds: float | None = None
           ) -> Callable[[Run], Awaitable[object]]:
    """A step that starts a replay job for ``name``: from an offset, or from ``back_seconds`` ago."""
    async def step(run: Run) -> str:
        subscriber = next(s for s in run.subscribers if s.name == name)
        since = None if back_seconds is None else datetime.now(UTC) - timedelta(seconds=back_seconds)
        async with Store(run.servers.dsn("store")) as store:
            job = await store.create_replay_job(subscriber.organization, subscriber.id, start_offset=offset,
                                                since=since)
        return f"replay job {job.id} for {name} from {offset if since is None else since.isoformat()}"
    step.__name__ = f"replay {name}"
    return step
