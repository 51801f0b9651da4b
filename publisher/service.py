"""The publisher: Kafka consumer group in, signed webhooks out, every delivery durable.

For each batch of records: match each event against its organization's integrations,
record one delivery per (event, integration) in the store, and only then commit the Kafka
offsets - so a publisher killed at any moment loses nothing. The new deliveries go straight
to their integrations' lanes; failed ones wait in the store for their next attempt time,
when the poller hands them back. Several publishers share the partitions (consumer group)
and the retries (claims taken with SKIP LOCKED).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from models.settings import KafkaSettings, PublisherSettings
from publisher.deadletter import DeadLetters, UnroutedLog, parse_event
from publisher.dispatch import Dispatcher
from publisher.errors import NotAnEvent, PublisherError, StoreError
from publisher.matching import matches_any
from publisher.retry import RetryPolicy
from publisher.sender import WebhookSender
from publisher.store import Integration, NewDelivery, Store

log = logging.getLogger("walhook.publisher")


def webhook_id(event_id: str, integration_id: int) -> str:
    """Stable per (event, integration): the same across retries, restarts, replays and re-reads."""
    return f"{event_id}_i{integration_id}"


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


class IntegrationCache:
    """Enabled integrations per organization and by id, reloaded from the store after ``ttl`` seconds."""

    def __init__(self, store: Store, ttl: float) -> None:
        self._store = store
        self._ttl = ttl
        self._by_org: dict[str, tuple[float, list[Integration]]] = {}
        self._by_id: dict[int, tuple[float, Integration]] = {}

    async def of(self, organization_id: str) -> list[Integration]:
        entry = self._by_org.get(organization_id)
        if entry is None or time.monotonic() - entry[0] > self._ttl:
            entry = (time.monotonic(), await self._store.integrations_of(organization_id))
            self._by_org[organization_id] = entry
            for integration in entry[1]:
                self._by_id[integration.id] = (entry[0], integration)
        return entry[1]

    async def by_id(self, integration_id: int) -> Integration:
        entry = self._by_id.get(integration_id)
        if entry is None or time.monotonic() - entry[0] > self._ttl:
            entry = (time.monotonic(), await self._store.integration(integration_id))
            self._by_id[integration_id] = entry
        return entry[1]


class Publisher:
    def __init__(self, kafka: KafkaSettings, settings: PublisherSettings, store: Store,
                 sender: WebhookSender) -> None:
        self.kafka = kafka
        self.settings = settings
        self.store = store
        self.dispatcher = Dispatcher(
            store, sender, RetryPolicy(tuple(settings.retry_delays), settings.retry_jitter, random.Random()),
            concurrency=settings.concurrency_per_integration, lane_capacity=settings.lane_capacity,
            disable_after=timedelta(days=settings.disable_after_days))
        self._integrations = IntegrationCache(store, settings.integrations_cache_seconds)
        self._claim = timedelta(seconds=settings.claim_seconds)
        dead_letter_topic = settings.dead_letter_topic or f"{kafka.topic}.dead-letter"
        if dead_letter_topic == kafka.topic:  # its records would come back, forever
            raise PublisherError(f"[publisher] dead_letter_topic must differ from [kafka] topic ({kafka.topic!r})")
        self.dead_letters = DeadLetters(kafka, dead_letter_topic)
        self._unrouted = UnroutedLog()

    @property
    def delivered(self) -> int:
        return self.dispatcher.delivered

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            self.kafka.topic, bootstrap_servers=self.kafka.bootstrap_servers, group_id=self.kafka.consumer_group,
            enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=self.kafka.fetch_max_wait_ms,
        )
        # Retries come from the store, so they start at once, before the consumer has joined its
        # group (after a crash, joining waits for the dead member's session to expire).
        self.dispatcher.start()
        poller = asyncio.create_task(self._poll_due(stop))
        try:
            if not await self._start_consumer(consumer, stop):
                return
            while not stop.is_set():
                await self.dispatcher.room()
                batch = await consumer.getmany(timeout_ms=200, max_records=1000)
                if batch:
                    await self._consume(consumer, batch)
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            await consumer.stop()
            await self.dead_letters.close()
            await self.dispatcher.close()

    async def _start_consumer(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> bool:
        """Join the consumer group; False if asked to stop first (joining can take a while)."""
        starting = asyncio.ensure_future(consumer.start())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return False
        try:
            starting.result()
        except KafkaError as exc:
            raise PublisherError(f"cannot reach Kafka at {self.kafka.bootstrap_servers}: {exc}") from exc
        return True

    async def _consume(self, consumer: AIOKafkaConsumer, batch: dict[Any, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Durably record the batch's deliveries, then commit, then dispatch."""
        new: list[tuple[NewDelivery, Integration]] = []
        for records in batch.values():
            for record in records:
                new.extend(await self._deliveries_for(record))
        integrations = {integration.id: integration for _, integration in new}
        while True:
            try:
                created = await self.store.create_deliveries([d for d, _ in new], self._claim)
                break
            except StoreError as exc:  # never commit offsets past events whose deliveries are not recorded
                log.error("cannot record deliveries, retrying: %s", exc)
                await asyncio.sleep(1.0)
        await self.dead_letters.flush()  # like deliveries: never commit past a record not yet dead-lettered
        await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
        for delivery in created:
            self.dispatcher.submit(delivery, integrations[delivery.integration_id])

    async def _deliveries_for(self, record: ConsumerRecord[bytes, bytes]) -> list[tuple[NewDelivery, Integration]]:
        try:
            fields = parse_event(record.value, record.headers or ())
        except NotAnEvent as exc:
            self.dead_letters.add(record, str(exc))
            return []
        if fields.organization_id is None:
            self._unrouted.note(fields)
            return []
        event_id, organization, entity_key = fields.event_id, fields.organization_id, fields.entity_key
        operation, path = fields.operation, fields.entity_path
        environment = dict(record.headers or ()).get("walhook-environment")
        source_environment = environment.decode() if environment else None
        return [(NewDelivery(integration.id, organization, event_id, webhook_id(event_id, integration.id),
                             entity_key, path, operation, record.value or b"", record.partition, record.offset),
                 integration)
                for integration in await self._integrations_of(organization)
                if matches_any(integration.subscriptions, entity_key, operation)
                and integration.environment in (None, source_environment)]

    async def _integrations_of(self, organization: str) -> list[Integration]:
        """The organization's integrations. A store outage is waited out like one while recording deliveries:
        the batch's offsets stay uncommitted meanwhile, and the process keeps running."""
        while True:
            try:
                return await self._integrations.of(organization)
            except StoreError as exc:
                log.error("cannot read the integrations of %s, retrying: %s", organization, exc)
                await asyncio.sleep(1.0)

    async def _poll_due(self, stop: asyncio.Event) -> None:
        """Hand due retries (and deliveries others released) to the lanes, as room allows."""
        while not stop.is_set():
            room = self.settings.lane_capacity * 4 - self.dispatcher.backlog
            try:
                for delivery in await self.store.claim_due(max(room, 0), self._claim) if room > 0 else []:
                    self.dispatcher.submit(delivery, await self._integrations.by_id(delivery.integration_id))
            except StoreError as exc:
                log.warning("cannot look for due deliveries: %s", exc)
            await asyncio.sleep(self.settings.poll_interval)
