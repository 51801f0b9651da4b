"""A process's own Prometheus endpoint: a ``prometheus_client`` registry served over HTTP by aiohttp.

Both long-running halves use it: the capture process on ``[source] metrics_address``, the
publisher on ``[publisher] metrics_address``. The exposition (HELP and TYPE lines, histogram
buckets) is prometheus-client's own ``generate_latest``; every registry carries prometheus-client's
process, GC and platform collectors (``process_cpu_seconds_total``, ``python_gc_*``, ``python_info``).
The same address answers ``/healthz`` (the process is alive) and ``/readyz`` (its ``Readiness``).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from models.errors import WalhookError
from models.health import Readiness


def process_registry() -> CollectorRegistry:
    """A registry with prometheus-client's process, GC and platform collectors, for a process's own figures."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def parse_address(address: str, setting: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` -> ``("127.0.0.1", 9464)``; a ``WalhookError`` naming ``setting`` otherwise."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise WalhookError(f"{setting} {address!r}: expected host:port, e.g. 127.0.0.1:9464")
    return host.strip("[]"), int(port)


class MetricsEndpoint:
    """Serves ``GET /metrics`` of ``registry``, ``/healthz`` and ``/readyz`` of ``readiness`` on ``host:port``.

    ``open`` / ``close`` are idempotent."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, setting: str,
                 readiness: Readiness | None = None) -> None:
        self.registry = registry
        self.readiness = readiness or Readiness()
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
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
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

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        """200 when every check passes, 503 otherwise; the body names each check and its state."""
        ready, checks = await self.readiness.report()
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)

    async def __aenter__(self) -> MetricsEndpoint:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
