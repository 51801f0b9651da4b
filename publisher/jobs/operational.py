"""The operational events' relay, one of the publisher's supervised loops: store outbox -> events topic.

The store announces operational events (``models.operational``) in the transactions that change what
they describe; this loop claims a batch, produces each record to the events topic (keyed by its
subject, so one subject's events stay in order) and forgets the batch once Kafka acknowledged it. From
there a publisher routes and delivers them like any event: signed, retried, logged, replayable. A
publisher killed after producing and before forgetting leaves the batch to be relayed again when its
claim runs out; the events keep their ids, so receivers see the same webhook-ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from models.errors import SecretError, StoreError
from models.operational import OperationalEvent, record_of
from models.settings import KafkaSettings, OperationalSettings

log = logging.getLogger("walhook.publisher")

BATCH = 500  # events claimed and produced per round
RECONNECT_SECONDS = 5.0  # between attempts to reach Kafka


class RelayStore(Protocol):
    """What the relay needs of the store."""

    async def claim_operational(self, limit: int, claim_for: timedelta) -> list[OperationalEvent]: ...

    async def relayed(self, event_ids: list[int]) -> None: ...

    async def keep_operator_endpoint(self, url: str, secret: str) -> int: ...


class OperationalRelay:
    """Relays announced operational events to Kafka until stopped; the store or Kafka being down only delays."""

    def __init__(self, store: RelayStore, kafka: KafkaSettings, settings: OperationalSettings,
                 claim: timedelta) -> None:
        self._store, self._kafka, self._settings, self._claim = store, kafka, settings, claim
        self.relayed = 0

    async def run(self, stop: asyncio.Event) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self._kafka.bootstrap_servers, acks="all",
                                    linger_ms=self._kafka.linger_ms)
        try:
            if not await self._start(producer, stop):
                return
            endpoint_kept = self._settings.operator_url is None
            while not stop.is_set():
                endpoint_kept = endpoint_kept or await self._keep_operator_endpoint()
                await self._round(producer)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._settings.relay_seconds)
        finally:
            await producer.stop()

    async def _start(self, producer: AIOKafkaProducer, stop: asyncio.Event) -> bool:
        """Connect, however long Kafka is away (the events wait in the store); False if stopped first."""
        while not stop.is_set():
            try:
                await producer.start()
                return True
            except KafkaError as exc:
                log.warning("cannot relay operational events yet: Kafka at %s: %s", self._kafka.bootstrap_servers,
                            exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RECONNECT_SECONDS)
        return False

    async def _keep_operator_endpoint(self) -> bool:
        """Make the operator's endpoint what ``[operational]`` says; False (try again later) if the store is down."""
        assert self._settings.operator_url is not None and self._settings.operator_secret is not None
        try:
            integration_id = await self._store.keep_operator_endpoint(self._settings.operator_url,
                                                                      self._settings.operator_secret)
        except SecretError as exc:  # a bad secret in the config stays bad: say so once, relay the rest
            log.error("[operational] operator_secret: %s; the operator's endpoint receives nothing", exc)
            return True
        except StoreError as exc:
            log.warning("cannot set up the operator's endpoint yet: %s", exc)
            return False
        log.info("operator's endpoint %s is integration %d", self._settings.operator_url, integration_id)
        return True

    async def _round(self, producer: AIOKafkaProducer) -> None:
        try:
            while events := await self._store.claim_operational(BATCH, self._claim):
                await self._produce(producer, events)
                await self._store.relayed([event.id for event in events])
                self.relayed += len(events)
                if len(events) < BATCH:
                    return
        except (StoreError, KafkaError) as exc:
            log.warning("cannot relay operational events yet: %s", exc)

    async def _produce(self, producer: AIOKafkaProducer, events: list[OperationalEvent]) -> None:
        sent = []
        for event in events:
            key, value, headers = record_of(event)
            sent.append(await producer.send(self._kafka.topic, value, key=key, headers=headers))
        await asyncio.gather(*sent)
