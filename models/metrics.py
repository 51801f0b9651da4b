"""A process's own Prometheus endpoint: a ``prometheus_client`` registry served over HTTP by aiohttp.

Both long-running halves use it: the capture process on ``[source] metrics_address``, the
publisher on ``[publisher] metrics_address``. The exposition (HELP and TYPE lines, histogram
buckets) is prometheus-client's own ``generate_latest``.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from models.errors import WalhookError


def parse_address(address: str, setting: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` -> ``("127.0.0.1", 9464)``; a ``WalhookError`` naming ``setting`` otherwise."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise WalhookError(f"{setting} {address!r}: expected host:port, e.g. 127.0.0.1:9464")
    return host.strip("[]"), int(port)


class MetricsEndpoint:
    """Serves ``GET /metrics`` of ``registry`` on ``host:port``. ``open`` / ``close`` are idempotent."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, setting: str) -> None:
        self.registry = registry
        self.host, self.port = host, port
        self._setting = setting
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    async def open(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise WalhookError(f"{self._setting} {self.host}:{self.port}: cannot listen: {exc}") from exc
        self._runner = runner

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"content-type": CONTENT_TYPE_LATEST})

    async def __aenter__(self) -> MetricsEndpoint:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
