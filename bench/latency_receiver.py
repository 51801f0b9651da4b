"""The latency benchmark's webhook receiver: arrival time first, then the signature check.

The time is taken when the request reaches the handler, before its body is read or
verified, so the receiver's own work does not count as walhook's latency. Every request is
verified with the ``standardwebhooks`` library (not walhook's signing code); only verified
ones count as delivered. It keeps one float per entity, not the requests, so a run of
hundreds of thousands of webhooks stays small.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from types import TracebackType

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def transaction_of(event: dict) -> int:
    """The writer's transaction an event comes from: an insert's row id, or the id an update's note names."""
    value = (event.get("data") or {}).get("value") or {}
    note = (value.get("properties") or {}).get("note") or ""
    return int(note[1:]) if event.get("operationType") == "updated" and note.startswith("u") else int(event["entityId"])


class TimingReceiver:
    """Serves ``POST /hooks`` on 127.0.0.1; ``arrivals`` maps each transaction to its first verified arrival."""

    def __init__(self) -> None:
        self.secret = ""
        self.arrivals: dict[int, float] = {}
        self.verified = 0
        self.rejected = 0
        self.duplicates = 0
        self.url = ""
        self._webhook: Webhook | None = None
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> TimingReceiver:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hooks"
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, ids: Iterable[int], stall_timeout: float, timeout: float | None = None) -> None:
        """Return once every id arrived, when none arrived for ``stall_timeout`` seconds, or after ``timeout``."""
        missing = {i for i in ids if i not in self.arrivals}
        last_progress = time.monotonic()
        deadline = last_progress + (timeout if timeout is not None else float("inf"))
        while missing and time.monotonic() - last_progress < stall_timeout and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            before = len(missing)
            missing = {i for i in missing if i not in self.arrivals}
            if len(missing) < before:
                last_progress = time.monotonic()

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.time()
        body = await request.read()
        if self._webhook is None:
            self._webhook = Webhook(self.secret)
        try:
            event = self._webhook.verify(body, {name.lower(): value for name, value in request.headers.items()})
        except WebhookVerificationError:
            self.rejected += 1
            return web.Response(status=401)
        self.verified += 1
        row_id = transaction_of(event)
        if row_id in self.arrivals:
            self.duplicates += 1
        else:
            self.arrivals[row_id] = arrived
        return web.Response(status=204)
