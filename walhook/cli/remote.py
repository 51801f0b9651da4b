"""The command line through a running management API (``--api URL --token T``), for an operator
without database credentials. The token is an organization's API key (``whk_...``) for that
organization's integrations, deliveries and replay jobs, or the admin token for ``status``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from tqdm import tqdm

from models.errors import WalhookError


class ApiClient:
    """JSON over HTTP to the management API; any failure is one ``WalhookError`` line."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._token = token

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None,
                   params: dict[str, Any] | None = None) -> Any:
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        headers = {"authorization": f"Bearer {self._token}"}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session, \
                    session.request(method, self.url + path, json=body, params=query, headers=headers) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise WalhookError(f"cannot reach the management API at {self.url}: {exc or type(exc).__name__}") from exc
        if status >= 400:
            raise WalhookError(f"{method} {path}: HTTP {status}: {problem_line(text)}")
        return orjson.loads(text) if text else None


def problem_line(text: str) -> str:
    """The line to show for an error answer: an RFC 9457 problem's ``detail`` (else its ``title``); an
    answer that is not one (a proxy's page, say), its first line."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and (line := data.get("detail") or data.get("title")):
        return str(line)
    return (text.strip().splitlines() or ["(no body)"])[0][:200]


def api_of(args: argparse.Namespace) -> ApiClient | None:
    """The API client ``--api`` / ``$WALHOOK_API`` asks for, or None (work through the store)."""
    url = getattr(args, "api", None) or os.environ.get("WALHOOK_API")
    if not url:
        return None
    token = getattr(args, "token", None) or os.environ.get("WALHOOK_TOKEN")
    if not token:
        raise WalhookError("--api needs --token (or $WALHOOK_TOKEN): an organization's API key, or the admin token")
    return ApiClient(url, token)


class Progress:
    """A progress bar on a terminal, plain lines otherwise (logs, pipes, CI)."""

    def __init__(self, what: str, unit: str, total: int | None = None) -> None:
        self._terminal = sys.stderr.isatty()
        self._bar = tqdm(desc=what, unit=unit, total=total, file=sys.stderr) if self._terminal else None
        self._last = ""

    def update(self, done: int, line: str) -> None:
        if self._bar is not None:
            self._bar.n = done
            self._bar.set_postfix_str(line.split(": ", 1)[-1], refresh=True)
        elif line != self._last:
            print(line, file=sys.stderr, flush=True)
        self._last = line

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            print(self._last, file=sys.stderr, flush=True)


async def follow(read: Callable[[], Any], summary: Callable[[Any], str], interval: float = 1.0) -> Any:
    """Read a replay job until it ends, showing its progress; returns its last state."""
    import asyncio

    progress = Progress("replay", "records")
    try:
        while True:
            job = await read()
            progress.update(int(_field(job, "scanned")), summary(job))
            if _field(job, "state") != "running":
                return job
            await asyncio.sleep(interval)
    finally:
        progress.close()


def _field(job: Any, name: str) -> Any:
    return job[name] if isinstance(job, dict) else getattr(job, name)


async def follow_settling(pending: Callable[[], Any], total: int, interval: float = 1.0) -> int:
    """Wait until none of ``total`` scheduled deliveries is pending, showing how many settled; returns
    how many were still pending when it stopped (0 unless interrupted)."""
    import asyncio

    progress = Progress("recover", "deliveries", total)
    try:
        while True:
            left = await pending()
            progress.update(total - left, f"recover: {total - left} of {total} deliveries settled")
            if left == 0:
                return 0
            await asyncio.sleep(interval)
    finally:
        progress.close()
