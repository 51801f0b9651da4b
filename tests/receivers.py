"""A scripted webhook receiver for delivery tests: real HTTP on 127.0.0.1.

Every request is verified with the ``standardwebhooks`` library before the script decides
the answer, so a test sees exactly what a receiver would: which webhook-ids arrived, in
which order, and whether each verified.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Hit:
    path: str
    webhook_id: str
    event: dict[str, Any] | None  # None when the signature did not verify
    signatures: int
    at: float
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Answer:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    body: bytes = b""


Script = Callable[[str, int], Answer]  # (path, how many requests this path has had so far) -> answer


def always(status: int = 204, **kwargs: Any) -> Script:
    return lambda path, count: Answer(status, **kwargs)


async def serve(app: web.Application, port: int = 0, **options: Any) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on 127.0.0.1:``port`` (0: any free port); the runner to clean up, and the port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, **options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@dataclass
class ScriptedReceiver:
    secrets: dict[str, str] = field(default_factory=dict)  # path -> whsec_ secret that must verify
    scripts: dict[str, Script] = field(default_factory=dict)  # path -> script; default: 204
    hits: list[Hit] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _counts: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def verified(self, path: str | None = None) -> list[Hit]:
        return [hit for hit in self.hits if hit.event is not None and (path is None or hit.path == path)]

    async def __aenter__(self) -> ScriptedReceiver:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/{path}", self._handle)
        self._runner, self.port = await serve(app, self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        event = None
        secret = self.secrets.get(path)
        if secret is not None:
            try:
                event = Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                event = None
        else:
            event = orjson.loads(body)
        count = self._counts.get(path, 0)
        self._counts[path] = count + 1
        self.hits.append(Hit(path, headers.get("webhook-id", ""), event,
                             len(headers.get("webhook-signature", "").split()), time.time(), headers))
        answer = self.scripts.get(path, always())(path, count)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return web.Response(status=answer.status, headers=answer.headers, body=answer.body)
