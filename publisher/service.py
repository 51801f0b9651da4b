"""The publisher: Kafka consumer group in, signed webhooks out.

Each partition's records are handled in order; each record is fanned out to the matching
integrations of its organization concurrently; offsets are committed only after every
delivery of the batch succeeded (or was given up on, which is logged as an error).

Walking-skeleton limits, stated in the README: retries happen in memory (a restart
re-delivers from the last committed offset, so nothing is lost, but a long outage of one
endpoint holds back its partition), and there is no delivery log yet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from models.settings import KafkaSettings, PublisherSettings
from publisher.errors import PublisherError
from publisher.matching import matches_any
from publisher.sender import WebhookSender
from publisher.store import Integration, Store

log = logging.getLogger("walhook.publisher")


class Stopping(Exception):
    """Raised inside a delivery when the publisher is asked to stop; the batch is not committed."""


def webhook_id(event_id: str, integration_id: int) -> str:
    """Stable per (event, integration): the same across retries, restarts and re-reads."""
    return f"{event_id}_i{integration_id}"


class IntegrationCache:
    """Integrations per organization, reloaded from the store after ``ttl`` seconds."""

    def __init__(self, store: Store, ttl: float) -> None:
        self._store = store
        self._ttl = ttl
        self._entries: dict[str, tuple[float, list[Integration]]] = {}

    async def get(self, organization_id: str) -> list[Integration]:
        now = time.monotonic()
        entry = self._entries.get(organization_id)
        if entry is None or now - entry[0] > self._ttl:
            entry = (now, await self._store.integrations_of(organization_id))
            self._entries[organization_id] = entry
        return entry[1]


async def consumer_group_state(bootstrap_servers: str, group: str) -> str:
    """The group's state as the broker reports it: ``Empty``, ``PreparingRebalance``, ``Stable``, ..."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        await admin.start()
        (response,) = await admin.describe_consumer_groups([group])
        return str(response.groups[0][2])
    except KafkaError as exc:
        raise PublisherError(f"cannot describe consumer group {group!r}: {exc}") from exc
    finally:
        await admin.close()


class Publisher:
    def __init__(self, kafka: KafkaSettings, settings: PublisherSettings, store: Store,
                 sender: WebhookSender) -> None:
        self.kafka = kafka
        self.settings = settings
        self.sender = sender
        self.delivered = 0
        self._integrations = IntegrationCache(store, settings.integrations_cache_seconds)
        self._stop = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        consumer = AIOKafkaConsumer(
            self.kafka.topic, bootstrap_servers=self.kafka.bootstrap_servers, group_id=self.kafka.consumer_group,
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_interval_ms=3_600_000,
            fetch_max_wait_ms=self.kafka.fetch_max_wait_ms,
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            await consumer.stop()
            raise PublisherError(f"cannot reach Kafka at {self.kafka.bootstrap_servers}: {exc}") from exc
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                if not batch:
                    continue
                await asyncio.gather(*(self._partition(records) for records in batch.values()))
                await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
        except Stopping:
            log.info("stopping; undelivered records stay uncommitted and are delivered after restart")
        finally:
            await consumer.stop()

    async def _partition(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:  # in order: one entity's changes share a partition
            await self._record(record)

    async def _record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            event: dict[str, Any] = orjson.loads(record.value or b"")
            event_id, organization = event["eventId"], event["organizationId"]
            entity_key, operation = event["entityKey"], event["operationType"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.error("skipping record %s/%d@%d: not a walhook event (%s)", record.topic, record.partition,
                      record.offset, exc)
            return
        if organization is None:
            log.warning("event %s has no organizationId; no integration can match it", event_id)
            return
        targets = [integration for integration in await self._integrations.get(organization)
                   if matches_any(integration.subscriptions, entity_key, operation)]
        await asyncio.gather(*(self._deliver(integration, event_id, record.value or b"") for integration in targets))

    async def _deliver(self, integration: Integration, event_id: str, body: bytes) -> None:
        msg_id = webhook_id(event_id, integration.id)
        for number, delay in enumerate(self.settings.retry_delays, start=1):
            await self._sleep(delay)
            result = await self.sender.attempt(integration.url, integration.secrets, msg_id, body)
            if result.succeeded:
                self.delivered += 1
                return
            log.warning("attempt %d of %s to integration %d (%s) failed: %s", number, msg_id, integration.id,
                        integration.url, result.describe())
        log.error("gave up on %s to integration %d after %d attempts", msg_id, integration.id,
                  len(self.settings.retry_delays))

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            if self._stop.is_set():
                raise Stopping
            return
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return
        raise Stopping
