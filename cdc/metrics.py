"""The capture process's own Prometheus endpoint: what only it knows.

``GET /metrics`` on ``[source] metrics_address`` (off by default). The management API's
``/metrics`` reports the slot lag too, read from the server; this endpoint adds the
capture side: events captured, changes dead-lettered (too large for Kafka, or not
convertible: alert when it grows), the confirmed LSN, reconnects, the heartbeat's age,
whether the slot lag is over ``max_slot_lag_bytes`` (the alarm the log also raises), whether
the slot is a failover slot and whether each standby's copy of it is ready to take over, and the
backfill's rows read, published and superseded by the stream (``walhook_cdc_backfill_*``).
"""

from __future__ import annotations

import time

from aiohttp import web

from cdc.errors import SourceError
from cdc.pipeline import CaptureStats
from models.settings import SourceSettings


def render_metrics(stats: CaptureStats, source: SourceSettings, now: float | None = None) -> str:
    """The Prometheus text exposition of ``stats`` (pure: ``now`` is a ``time.monotonic()`` reading)."""
    lines = [
        "# TYPE walhook_cdc_events_captured_total counter",
        f"walhook_cdc_events_captured_total {stats.events_captured}",
        "# TYPE walhook_cdc_events_dead_lettered_total counter",
        f"walhook_cdc_events_dead_lettered_total {stats.events_dead_lettered}",
        "# TYPE walhook_cdc_confirmed_lsn gauge",
        f"walhook_cdc_confirmed_lsn {stats.confirmed_lsn}",
        "# TYPE walhook_cdc_reconnects_total counter",
        f"walhook_cdc_reconnects_total {stats.reconnects}",
    ]
    if stats.slot_lag_bytes is not None:
        lines += ["# TYPE walhook_cdc_slot_lag_bytes gauge", f"walhook_cdc_slot_lag_bytes {stats.slot_lag_bytes}"]
    if source.max_slot_lag_bytes is not None:
        over = int(stats.slot_lag_bytes is not None and stats.slot_lag_bytes > source.max_slot_lag_bytes)
        lines += ["# TYPE walhook_cdc_slot_lag_limit_bytes gauge",
                  f"walhook_cdc_slot_lag_limit_bytes {source.max_slot_lag_bytes}",
                  "# TYPE walhook_cdc_slot_lag_over_limit gauge", f"walhook_cdc_slot_lag_over_limit {over}"]
    lines += _failover_lines(stats)
    lines += [
        "# TYPE walhook_cdc_backfill_running gauge",
        f"walhook_cdc_backfill_running {int(stats.backfill_id is not None)}",
        "# TYPE walhook_cdc_backfill_rows_read_total counter",
        f"walhook_cdc_backfill_rows_read_total {stats.backfill_rows_read}",
        "# TYPE walhook_cdc_backfill_rows_published_total counter",
        f"walhook_cdc_backfill_rows_published_total {stats.backfill_rows_published}",
        "# TYPE walhook_cdc_backfill_rows_superseded_total counter",
        f"walhook_cdc_backfill_rows_superseded_total {stats.backfill_rows_superseded}",
        "# TYPE walhook_cdc_backfill_longest_hold_seconds gauge",
        f"walhook_cdc_backfill_longest_hold_seconds {stats.backfill_longest_hold:.6f}",
    ]
    age = stats.heartbeat_age(now)
    if age is not None:
        lines += ["# TYPE walhook_cdc_heartbeat_age_seconds gauge", f"walhook_cdc_heartbeat_age_seconds {age:.3f}"]
    return "\n".join(lines) + "\n"


def _failover_lines(stats: CaptureStats) -> list[str]:
    """Whether the slot is a failover slot, and per standby whether its copy could take over (1) or not (0)."""
    lines = []
    if stats.failover_slot is not None:
        lines += ["# TYPE walhook_cdc_slot_failover gauge", f"walhook_cdc_slot_failover {int(stats.failover_slot)}"]
    if stats.standbys is not None:
        lines.append("# TYPE walhook_cdc_standby_failover_ready gauge")
        lines += [f'walhook_cdc_standby_failover_ready{{standby="{standby.standby}"}} {int(standby.ready)}'
                  for standby in stats.standbys]
    return lines


def parse_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` -> ``("127.0.0.1", 9464)``; ``SourceError`` naming the setting otherwise."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SourceError(f"[source] metrics_address {address!r}: expected host:port, e.g. 127.0.0.1:9464")
    return host.strip("[]"), int(port)


class MetricsServer:
    """Serves ``render_metrics`` over HTTP while capture runs. ``open`` / ``close`` are idempotent."""

    def __init__(self, stats: CaptureStats, source: SourceSettings, address: str) -> None:
        self._stats = stats
        self._source = source
        self._host, self._port = parse_address(address)
        self._runner: web.AppRunner | None = None

    async def open(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except OSError as exc:
            await runner.cleanup()
            raise SourceError(f"[source] metrics_address {self._host}:{self._port}: cannot listen: {exc}") from exc
        self._runner = runner

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        text = render_metrics(self._stats, self._source, time.monotonic())
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def __aenter__(self) -> MetricsServer:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
