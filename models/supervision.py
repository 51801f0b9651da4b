"""Supervision: every long-lived loop of a process runs in one task group.

A loop that ends on its own, or raises, is a crash: the whole group stops and the process exits
with one line naming the loop and the error, so that its supervisor (systemd, Kubernetes,
compose) restarts it - rather than going on with a part silently dead. When the process is asked
to stop, the loops are cancelled at once (a loop waiting out a store outage included), and the
process's own shutdown runs after, within its own bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any

from models.errors import WalhookError

log = logging.getLogger("walhook")


class LoopCrashed(WalhookError):
    """A long-lived loop ended or failed; the process must stop."""


class Supervisor:
    """``async with Supervisor(stop) as group: group.start(name, loop)``; leaves when ``stop`` is set.

    Leaving cancels every loop still running. A loop that returned or raised first makes the
    ``async with`` raise ``LoopCrashed`` naming it (after the others were cancelled).
    """

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self._group = asyncio.TaskGroup()
        self._crash: LoopCrashed | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Supervisor:
        await self._group.__aenter__()
        return self

    def start(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run ``loop()`` until the process stops; its end before that is a crash."""
        self._track(self._group.create_task(self._watch(name, loop), name=name))

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A task the caller cancels itself (a lane's worker, say); if it fails, the process stops."""
        return self._track(self._group.create_task(self._guard(name, coroutine), name=name))

    def _track(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _watch(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        await self._guard(name, loop())
        if not self._stop.is_set():
            self._crashed(LoopCrashed(f"{name} stopped on its own"))

    async def _guard(self, name: str, coroutine: Awaitable[None]) -> None:
        try:
            await coroutine
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s crashed", name)
            self._crashed(LoopCrashed(f"{name} crashed: {type(exc).__name__}: {exc}"))

    def _crashed(self, crash: LoopCrashed) -> None:
        if self._crash is None:
            self._crash = crash
        self._stop.set()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc is None:
            await self._stop.wait()
        for task in list(self._tasks):
            task.cancel()
        await self._group.__aexit__(exc_type, exc, tb)
        if self._crash is not None and exc is None:
            raise self._crash



async def alongside(main: Awaitable[None], helpers: dict[str, Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` with helper loops beside it; a helper that fails or ends fails ``main`` too.

    For a loop whose own errors the caller handles (a reconnecting stream): an exception of ``main``
    or of a helper propagates as it is (a lost connection noticed by a helper is still a lost
    connection), a helper that returns is ``LoopCrashed`` naming it; either way the others are cancelled.
    """
    tasks = {asyncio.ensure_future(coroutine): name for name, coroutine in helpers.items()}
    primary = asyncio.ensure_future(main)
    try:
        done, _ = await asyncio.wait({primary, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        if primary in done:
            return primary.result()
        task = next(iter(done))
        error = task.exception()
        if error is not None:
            log.error("%s failed: %s", tasks[task], error)
            raise error
        raise LoopCrashed(f"{tasks[task]} stopped on its own")
    finally:
        for task in (primary, *tasks):
            task.cancel()
        await asyncio.gather(primary, *tasks, return_exceptions=True)
