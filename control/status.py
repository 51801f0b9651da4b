"""One screen for an operator: the slot, consumer-group lag, integrations, replay jobs, the delivery log.

``gather_status`` reads each part where it lives (the source's ``pg_replication_slots``, the
broker's group offsets and end offsets, the store) and returns plain data, the same for
``walhook status`` and ``GET /v1/status``. A part that cannot be read says why instead of
failing the whole report.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import aiohttp
import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition

from cdc.lsn import SLOT_LAG_BYTES
from control.api.schemas import UsageOut
from models.settings import ApiSettings, EntitySettings, KafkaSettings, SourceSettings
from models.topics import partitions_note
from publisher.store import Store

_SLOT = f"""
SELECT s.slot_name, s.active, s.confirmed_flush_lsn::text,
       {SLOT_LAG_BYTES},
       extract(epoch FROM now() - r.reply_time)::float8, r.application_name, s.wal_status
FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
WHERE s.slot_name = %s
"""

# Every slot of the server nobody streams from, and the WAL it makes the server keep: an abandoned one
# (a test, a consumer gone) fills the disk.
_IDLE = ("SELECT slot_name, (pg_current_wal_insert_lsn() - restart_lsn)::bigint FROM pg_replication_slots "
         "WHERE NOT active AND restart_lsn IS NOT NULL ORDER BY 2 DESC")


async def gather_status(source: SourceSettings | None, kafka: KafkaSettings | None, store: Store,
                        entities: Sequence[EntitySettings] = ()) -> dict[str, Any]:
    """Every part of the report (``error`` in a part that could not be read)."""
    return {"at": datetime.now(UTC).isoformat(), "slot": await _guarded(slot_status, source),
            "entities_without_organization": [e.entity_key for e in entities if not e.reaches_an_organization()],
            "consumer_group": await _guarded(group_lag, kafka),
            "integrations": await store.integration_health(),
            "replay_jobs": [asdict(job) for job in await store.replay_jobs(None, state="running", limit=20)],
            "delivery_log": {**asdict(size := await store.log_size()), "total_bytes": size.total_bytes},
            "busiest_organizations": await store.busiest_organizations()}


async def gather_organization_status(store: Store, organization_id: str, api: ApiSettings) -> dict[str, Any]:
    """What an organization's own key may read of the status: its integrations, its running replay jobs,
    and its manual actions and log against their limits (nothing of the deployment or of others)."""
    usage = UsageOut.of(await store.usage(organization_id), api)
    return {"at": datetime.now(UTC).isoformat(), "organization": organization_id,
            "integrations": await store.integration_health(organization_id),
            "replay_jobs": [asdict(job) for job in await store.replay_jobs(organization_id, state="running",
                                                                          limit=20)],
            "usage": usage.model_dump()}


async def _guarded(read: Any, settings: Any) -> dict[str, Any] | None:
    if settings is None:
        return None
    try:
        return await read(settings)  # type: ignore[no-any-return]
    except Exception as exc:  # a part that cannot be read is reported, with why, not fatal
        return {"error": str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}


async def slot_status(source: SourceSettings) -> dict[str, Any]:
    """The slot as the server sees it, its readiness for a failover, and the capture's heartbeat age when
    it serves metrics."""
    from cdc.failover import failover_summary, readiness_line
    from models.dsn import primary_dsn

    async with await psycopg.AsyncConnection.connect(primary_dsn(source.dsn), connect_timeout=5) as conn:
        row = await (await conn.execute(_SLOT, [source.slot])).fetchone()
        idle = [{"name": name, "held_bytes": held} for name, held in await (await conn.execute(_IDLE)).fetchall()]
    if row is None:
        return {"name": source.slot, "error": "does not exist (walhook cdc creates it at its first start)",
                "inactive_slots": idle}
    name, active, confirmed, lag, report_age, application, wal_status = row
    failover, standbys = await failover_summary(source)
    return {"name": name, "active": active, "confirmed_lsn": confirmed, "lag_bytes": lag,
            "last_report_seconds": None if report_age is None else max(0.0, round(report_age, 1)),
            "streamed_by": application, "wal_status": wal_status,
            "heartbeat_age_seconds": await _heartbeat_age(source.metrics_address),
            "failover_slot": failover, "failover": readiness_line(failover, standbys),
            "standbys": [{"standby": s.standby, "ready": s.ready, "reason": s.reason} for s in standbys],
            "inactive_slots": idle}


async def _heartbeat_age(address: str | None) -> float | None:
    """Read from the capture process's own /metrics (only it knows when its heartbeat came back)."""
    if address is None:
        return None
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session, \
                session.get(f"http://{address}/metrics") as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    match = re.search(r"^walhook_cdc_heartbeat_age_seconds (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def group_lag(kafka: KafkaSettings) -> dict[str, Any]:
    """Per partition of the events topic: the group's committed offset, the end offset, the lag."""
    # A consumer of the group that never subscribes: it reads the group's commits without joining it.
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=kafka.consumer_group,
                                enable_auto_commit=False, request_timeout_ms=5000)
    try:
        await consumer.start()
        await consumer.topics()  # fetches the cluster's metadata, partitions included
        partitions = [TopicPartition(kafka.topic, p) for p in sorted(consumer.partitions_for_topic(kafka.topic) or ())]
        ends = await consumer.end_offsets(partitions) if partitions else {}
        committed = {tp: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()
    rows = []
    for tp in partitions:
        position = committed[tp]
        rows.append({"partition": tp.partition, "committed": position, "end": ends[tp],
                     "lag": max(0, ends[tp] - (position or 0))})
    return {"group": kafka.consumer_group, "topic": kafka.topic, "partitions": rows,
            "lag": sum(row["lag"] for row in rows),
            "partitions_warning": partitions_note(kafka.topic, len(partitions) or None, kafka.partitions)}
