"""Health and metrics: /healthz (alive), /readyz (store, Kafka, slot, failover), /metrics (Prometheus).

``failover`` in /readyz says whether each standby's copy of the slot could take over; it is
reported, not counted in ``ready``: a standby being rebuilt must not take the API out of service.

Metrics are read from the store and the source at scrape time, so any API process reports
the whole deployment: deliveries by outcome, the retry backlog, failure streaks, events the
integrations' conditions filtered out, attempt latency, events captured and slot lag. /readyz and
/metrics are for operators only (``publisher.api.operator``); /healthz says nothing and is open to all.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from publisher.api.operator import operator_access
from publisher.store import Store

router = APIRouter(tags=["health"])
operator = Depends(operator_access)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", dependencies=[operator])
async def readyz(request: Request) -> JSONResponse:
    checks = {"store": await _check_store(request), "kafka": await _check_kafka(request),
              "slot": await _check_slot(request), "failover": await _check_failover(request)}
    ready = all(result in ("ok", "not configured") for name, result in checks.items() if name != "failover")
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


async def _check_store(request: Request) -> str:
    try:
        await request.app.state.store.ping()
        return "ok"
    except Exception as exc:  # any failure is "not ready", with its reason
        return f"failing: {exc}"


async def _check_kafka(request: Request) -> str:
    from aiokafka.admin import AIOKafkaAdminClient

    kafka = request.app.state.settings.kafka
    if kafka is None:
        return "not configured"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, request_timeout_ms=3000)
    try:
        await admin.start()
        topics = await admin.list_topics()
        return "ok" if kafka.topic in topics else f"failing: topic {kafka.topic} does not exist"
    except Exception as exc:
        return f"failing: {exc}"
    finally:
        await admin.close()


async def _check_slot(request: Request) -> str:
    source = request.app.state.settings.source
    if source is None:
        return "not configured"
    rows = await _slot(request)
    if not rows:
        return f"failing: replication slot {source.slot} does not exist"
    return "ok" if rows[0]["active"] else f"failing: no walhook cdc streams from slot {source.slot}"


async def _check_failover(request: Request) -> str:
    from cdc.failover import failover_summary, readiness_line

    source = request.app.state.settings.source
    if source is None:
        return "not configured"
    return readiness_line(*await failover_summary(source))


async def _slot(request: Request) -> list[dict[str, Any]]:
    import psycopg

    source = request.app.state.settings.source
    async with await psycopg.AsyncConnection.connect(source.dsn, connect_timeout=3) as conn:
        cursor = await conn.execute(
            "SELECT active, (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint AS lag FROM pg_replication_slots "
            "WHERE slot_name = %s", [source.slot])
        return [{"active": row[0], "lag": row[1]} for row in await cursor.fetchall()]


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[operator])
async def metrics(request: Request) -> str:
    store = request.app.state.store
    counts = await store.delivery_counts()
    lines = ["# TYPE walhook_deliveries gauge"]
    lines += [f'walhook_deliveries{{status="{status}"}} {n}' for status, n in counts.items()]
    lines += ["# TYPE walhook_retry_backlog gauge", f"walhook_retry_backlog {counts.get('pending', 0)}"]
    lines += _failure_streaks(await store.failure_streaks(), request.app.state.settings.api.metrics_per_integration)
    lines += _filtered(await store.filtered_counts(), request.app.state.settings.api.metrics_per_integration)
    lines += await _attempt_latency(store)
    lines += await _capture_metrics(request)
    return "\n".join(lines) + "\n"


def _failure_streaks(streaks: dict[int, float], per_integration: bool) -> list[str]:
    """How many integrations are failing and the longest streak; per integration only when asked."""
    lines = ["# TYPE walhook_integrations_failing gauge", f"walhook_integrations_failing {len(streaks)}",
             "# TYPE walhook_integration_failing_seconds_max gauge",
             f"walhook_integration_failing_seconds_max {max(streaks.values(), default=0):.0f}"]
    if per_integration:
        lines.append("# TYPE walhook_integration_failing_seconds gauge")
        lines += [f'walhook_integration_failing_seconds{{integration="{integration}"}} {seconds:.0f}'
                  for integration, seconds in streaks.items()]
    return lines


def _filtered(counts: dict[int, int], per_integration: bool) -> list[str]:
    """Events conditions filtered out (no delivery): the total; per integration only when asked."""
    lines = ["# TYPE walhook_events_filtered_total counter", f"walhook_events_filtered_total {sum(counts.values())}"]
    if per_integration:
        lines.append("# TYPE walhook_integration_events_filtered_total counter")
        lines += [f'walhook_integration_events_filtered_total{{integration="{integration}"}} {n}'
                  for integration, n in counts.items()]
    return lines


_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


async def _attempt_latency(store: Store) -> list[str]:
    """Histogram of attempt durations over the last hour."""
    buckets, total, duration_sum = await store.attempt_durations(_BUCKETS_MS, timedelta(hours=1))
    lines = ["# TYPE walhook_attempt_duration_ms histogram"]
    lines += [f'walhook_attempt_duration_ms_bucket{{le="{b}"}} {n}' for b, n in zip(_BUCKETS_MS, buckets, strict=True)]
    lines += [f'walhook_attempt_duration_ms_bucket{{le="+Inf"}} {total}',
              f"walhook_attempt_duration_ms_sum {duration_sum:.1f}", f"walhook_attempt_duration_ms_count {total}"]
    return lines


async def _capture_metrics(request: Request) -> list[str]:
    if request.app.state.settings.source is None:
        return []
    try:
        rows = await _slot(request)
    except Exception:
        return []
    lag = rows[0]["lag"] if rows and rows[0]["lag"] is not None else 0
    return ["# TYPE walhook_slot_lag_bytes gauge", f"walhook_slot_lag_bytes {lag}"]
