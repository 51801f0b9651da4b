"""Health and metrics: /healthz (alive), /readyz (store, Kafka, slot, failover), /metrics (Prometheus).

``failover`` in /readyz says whether each standby's copy of the slot could take over; it is
reported, not counted in ``ready``: a standby being rebuilt must not take the API out of service.

Metrics are read from the store and the source at scrape time (``control.api.metrics``), so
any API process reports the whole deployment. /readyz and /metrics are for operators only
(``control.api.operator``); /healthz says nothing and is open to all.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from cdc.lsn import SLOT_LAG_BYTES
from control.api.metrics import api_metrics
from control.api.operator import operator_access

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
            f"SELECT active, {SLOT_LAG_BYTES} AS lag FROM pg_replication_slots WHERE slot_name = %s", [source.slot])
        return [{"active": row[0], "lag": row[1]} for row in await cursor.fetchall()]


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[operator])
async def metrics(request: Request) -> Response:
    per_integration = request.app.state.settings.api.metrics_per_integration
    return Response(await api_metrics(request.app.state.store, await _slot_lag(request), per_integration),
                    media_type=CONTENT_TYPE_LATEST)


async def _slot_lag(request: Request) -> int | None:
    if request.app.state.settings.source is None:
        return None
    try:
        rows = await _slot(request)
    except Exception:
        return None
    return rows[0]["lag"] if rows and rows[0]["lag"] is not None else 0
