"""A webhook receiver that verifies every request with the ``standardwebhooks`` library.

Serves ``POST /hooks/{organization}`` on 127.0.0.1 and checks each request against that
organization's secret - with the reference library, not walhook's own signing code - so
the demo, the tests and the compose example prove what a real receiver would see.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class ReceivedWebhook:
    organization: str
    webhook_id: str
    event: dict[str, Any]
    body: bytes
    headers: dict[str, str]
    received_at: float  # time.time()


@dataclass
class VerifyingReceiver:
    """Accepts verified webhooks (204), rejects bad signatures (401) and unknown paths (404)."""

    secrets: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 0
    on_webhook: Callable[[ReceivedWebhook], None] | None = None
    received: list[ReceivedWebhook] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = field(default=None, repr=False)

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/hooks/{organization}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> VerifyingReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def url_for(self, organization: str) -> str:
        return f"http://{self.host}:{self.port}/hooks/{organization}"

    async def _handle(self, request: web.Request) -> web.Response:
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError

        organization = request.match_info["organization"]
        body = await request.read()
        secret = self.secrets.get(organization)
        if secret is None:
            self.rejected.append(f"{organization}: no secret known")
            return web.Response(status=404, text="unknown organization")
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            event = Webhook(secret).verify(body, headers)
        except WebhookVerificationError as exc:
            self.rejected.append(f"{organization}: {exc}")
            return web.Response(status=401, text=f"signature verification failed: {exc}")
        received = ReceivedWebhook(organization, headers["webhook-id"], event, body, headers, time.time())
        self.received.append(received)
        if self.on_webhook is not None:
            self.on_webhook(received)
        return web.Response(status=204)
