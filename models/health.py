"""Readiness: named checks a process keeps up to date, read by ``GET /readyz`` on its metrics address.

A ``Check`` is told its state by the code that knows it (the capture when its slot starts or stops
streaming, the publisher when its consumer joins the group): reading it is free and cannot hang.
A ``Probe`` asks instead (the store's ``SELECT 1``), bounded by a short timeout, so a store that does
not answer makes ``/readyz`` say so within that time rather than hold the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

PROBE_TIMEOUT = 2.0
"""Seconds a probe may take before its check counts as failing."""


class Check:
    """One named condition of readiness; failing (``waiting`` says why) until told it passes."""

    def __init__(self, name: str, waiting: str) -> None:
        self.name = name
        self._failure: str | None = waiting

    def passing(self) -> None:
        self._failure = None

    def failing(self, reason: str) -> None:
        self._failure = reason

    async def failure(self) -> str | None:
        """Why the check fails now, or None when it passes."""
        return self._failure


class Probe(Check):
    """A check that asks ``probe`` at each reading: passing when it returns within ``timeout`` seconds."""

    def __init__(self, name: str, probe: Callable[[], Awaitable[object]], timeout: float = PROBE_TIMEOUT) -> None:
        super().__init__(name, "not asked yet")
        self._probe, self._timeout = probe, timeout

    async def failure(self) -> str | None:
        try:
            await asyncio.wait_for(self._probe(), self._timeout)
        except TimeoutError:
            return f"no answer within {self._timeout:g} s"
        except Exception as exc:  # any failure is "not ready", with its reason
            return str(exc) or type(exc).__name__
        return None


class Readiness:
    """The checks of one process; ``report`` reads them all at once."""

    def __init__(self, *checks: Check) -> None:
        self.checks = list(checks)

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    async def report(self) -> tuple[bool, dict[str, str]]:
        """Whether every check passes, and each check's state: ``"ok"`` or ``"failing: <reason>"``."""
        failures = await asyncio.gather(*(check.failure() for check in self.checks))
        states = {check.name: "ok" if failure is None else f"failing: {failure}"
                  for check, failure in zip(self.checks, failures, strict=True)}
        return all(failure is None for failure in failures), states
