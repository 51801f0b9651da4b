"""walhook's processes under a supervisor, and the kill -9 fault.

``Supervised`` runs ``walhook cdc`` or ``walhook publisher`` as a real child process and starts it
again whenever it exits - as systemd (``Restart=always``) or Kubernetes would. Exits it did not cause
are counted and their last log lines kept: a process that gives up is worth knowing about even when
the supervisor hides it. ``kill_loop`` SIGKILLs processes at random moments, repeatedly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.support import start_walhook
from walhook.stack import stop_process

RESTART_DELAY = 1.0  # seconds before the supervisor starts an exited process again


class Supervised:
    """One walhook process, restarted whenever it exits."""

    def __init__(self, command: str, config: Path, workdir: Path, name: str | None = None) -> None:
        self.command = command
        self.name = name or command
        self.config = config
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self.kills = 0
        self.exits: list[str] = []  # exits nobody asked for: "log name (code): last log line"
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._spawn()
        self._task = asyncio.create_task(self._watch())

    def _spawn(self) -> None:
        log = self.workdir / f"{self.name}-{len(self.logs)}.log"
        self.logs.append(log)
        self.process = start_walhook(self.command, self.config, log)

    async def _watch(self) -> None:
        while not self._stopping:
            process = self.process
            assert process is not None
            code = await asyncio.to_thread(process.wait)
            if self._stopping:
                return
            if process is self.process:  # not replaced by kill(): it exited by itself
                lines = self.logs[-1].read_text(errors="replace").strip().splitlines()
                self.exits.append(f"{self.logs[-1].name} ({code}): {lines[-1] if lines else ''}")
                await asyncio.sleep(RESTART_DELAY)
                if not self._stopping:
                    self._spawn()

    async def kill(self) -> None:
        """SIGKILL the process and start a new one at once."""
        process = self.process
        assert process is not None
        self.process = None  # tells the watcher this exit was ours
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait)
        self.kills += 1
        self._spawn()

    async def stop(self) -> None:
        """SIGTERM (SIGKILL after a grace period); no restart."""
        self._stopping = True
        if self.process is not None:
            await asyncio.to_thread(stop_process, self.process, signal.SIGTERM, 15.0)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def errors(self, limit: int = 3) -> list[str]:
        """A few ERROR lines and tracebacks from the logs, for the report."""
        found = [line for log in self.logs if log.exists() for line in log.read_text(errors="replace").splitlines()
                 if " ERROR " in line or " WARNING " in line or line.startswith("Traceback")]
        return found[:limit] + ([f"... {len(found) - limit} more"] if len(found) > limit else [])


async def kill_loop(targets: Sequence[Supervised], rng: random.Random, until: asyncio.Event,
                    delay: tuple[float, float], at_least: int = 1) -> int:
    """SIGKILL a random target every ``delay`` seconds until ``until`` is set and ``at_least`` kills happened."""
    kills = 0
    while True:
        await asyncio.sleep(rng.uniform(*delay))
        if until.is_set() and kills >= at_least:
            return kills
        await rng.choice(list(targets)).kill()
        kills += 1
