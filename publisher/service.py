"""The publisher: Kafka consumer group in, signed webhooks out, straight from the log.

Consumed records wait per organization and are routed in turns (``publisher.routing.turns``): each event
is matched against its organization's integrations and each delivery handed to its integration's lane
in memory; nothing is written before its first attempt.
The store keeps the log of attempts (written in batches after them) and what must wait:
retries, an entity's later changes while an earlier one waits, integrations that cannot take
them now. A record is settled once each of its deliveries is logged or waits in the store
(``publisher.settling.settlement``); offsets are committed up to the lowest unsettled record, so a
publisher killed at any moment resends at most what it had not settled, with the same
webhook-ids. Several publishers share the partitions (consumer group) and the retries (claims
taken with SKIP LOCKED).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from opentelemetry.trace import Tracer

from models.errors import StoreError
from models.headers import ORGANIZATION_ID
from models.settings import KafkaSettings, OperationalSettings, PublisherSettings, RetentionSettings
from models.supervision import Supervisor, alongside
from models.topics import TopicError, ensure_topic
from publisher.deadletter import DeadLetters, UnroutedLog
from publisher.errors import NotAnEvent, PublisherError
from publisher.jobs.operational import OperationalRelay
from publisher.jobs.pruning import prune_loop
from publisher.jobs.replay import ReplayRunner
from publisher.metrics import PublisherMetrics
from publisher.readiness import PublisherChecks
from publisher.routing.candidates import route_candidates
from publisher.routing.directory import IntegrationDirectory
from publisher.routing.recipients import delivery_of, parse_event, route
from publisher.routing.turns import RoutingTurns
from publisher.sending.dispatch import Dispatcher
from publisher.sending.retry import RetryPolicy
from publisher.sending.sender import WebhookSender
from publisher.settling.offsets import OffsetCommitter
from publisher.settling.positions import committed_positions
from publisher.settling.settlement import Settlement
from publisher.store import Delivery, NewDelivery, Store
from publisher.store.deliveries import CLAIM_PER_INTEGRATION
from publisher.tracing import traced_dispatcher, traced_routing

log = logging.getLogger("walhook.publisher")

SHUTDOWN_SECONDS = 5.0
"""How long each step of stopping may take (recording the last attempts, leaving the group)."""

MAX_UNSETTLED_RECORDS = 20_000
"""Records taken in but not settled yet: past this the consumer waits (memory stays bounded, and a crash
resends at most this many). Past half of it, slow lanes give their live deliveries to the store first
(``Dispatcher.spill_slow``): otherwise 20 hanging integrations with full lanes would reach it alone."""

TURN_SECONDS = 0.01
"""Routing time between two hand-overs to the lanes (each a look at the store): a turn routes the waiting
organizations' records in slices, least routing time spent first (``publisher.routing.turns``)."""

ROUTING_READ_AHEAD = 5_000
"""Records consumed ahead of routing: past this the consumer waits. Enough for an organization whose routing is
cheap to be read (and routed in its turn) while a costly one's records wait; few enough that the lanes, not the
consumer, set the pace (routing waits for a lane about to have room: ``Dispatcher.room``)."""


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
    """One publisher process: consumer, retry poller, replay jobs, directory and lanes, supervised together."""

    def __init__(self, kafka: KafkaSettings, settings: PublisherSettings, store: Store,
                 sender: WebhookSender, retention: RetentionSettings | None = None,
                 metrics: PublisherMetrics | None = None, tracer: Tracer | None = None,
                 operational: OperationalSettings | None = None) -> None:
        self.kafka = kafka
        self.settings = settings
        self.retention = retention or RetentionSettings()
        self.metrics = metrics or PublisherMetrics()
        self.metrics_url: str | None = None  # where the process serves them, for the ready line
        self._consumed: dict[int, tuple[int, int]] = {}  # partition -> (next offset, high watermark)
        self.store = store
        self.checks = PublisherChecks(kafka.consumer_group, store.ping)  # what /readyz reads
        self.sender = sender
        self.directory = IntegrationDirectory(store, settings.integrations_cache_seconds)
        self._claim = timedelta(seconds=settings.claim_seconds)
        dead_letter_topic = settings.dead_letter_topic_for(kafka)
        if dead_letter_topic == kafka.topic:  # its records would come back, forever
            raise PublisherError(f"[publisher] dead_letter_topic must differ from [kafka] topic ({kafka.topic!r})")
        self.dead_letters = DeadLetters(kafka, dead_letter_topic)
        self._unrouted = UnroutedLog()
        self.replays = ReplayRunner(store, kafka, self._claim,
                                    timedelta(seconds=2 * settings.integrations_cache_seconds + 5))
        self.operational = OperationalRelay(store, kafka, operational or OperationalSettings(), self._claim)
        self.dispatcher: Dispatcher | None = None
        self.settlement = Settlement()
        self._turns: RoutingTurns[ConsumerRecord[bytes, bytes]] = RoutingTurns(time.perf_counter)
        self._routable = asyncio.Event()  # records wait in self._turns
        self._committer: OffsetCommitter | None = None
        self._handing_over = asyncio.Lock()  # a batch taken in or a routing turn, or partitions let go: never both
        self._handovers = 0
        self.tracer = tracer  # [tracing] on: routing and attempts become spans (publisher.tracing); off: None
        if tracer is not None:
            self._deliveries_for = traced_routing(self._deliveries_for, tracer)  # type: ignore[method-assign,assignment]

    @property
    def delivered(self) -> int:
        return self.dispatcher.delivered if self.dispatcher else 0

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; a loop that crashes ends the run with ``LoopCrashed`` naming it.

        Once stopping, the run ends within ``SHUTDOWN_SECONDS`` (plus the consumer's own leave),
        even while the store is down: what is unrecorded is retried once its claim expires.
        """
        await self.directory.load(stop)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap_servers, group_id=self.kafka.consumer_group,
            enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=self.kafka.fetch_max_wait_ms,
        )
        consumer.subscribe([self.kafka.topic], listener=_Handover(self, consumer))
        try:
            async with Supervisor(stop) as group:
                self.dispatcher = dispatcher = self._dispatcher(group)
                dispatcher.recorder.on_recorded = self.metrics.attempts_recorded
                dispatcher.recorder.on_settled = self._settled
                self.metrics.watch(self.consumer_lag, dispatcher.lane_depths, self._turns.waiting)
                group.start("integration directory", lambda: self.directory.run(stop))
                group.start("attempt recorder", dispatcher.recorder.run)
                group.start("claim renewal", lambda: dispatcher.renew_claims(self._claim))
                # Retries come from the store, so they start at once, before the consumer has joined its
                # group (after a crash, joining waits for the dead member's session to expire).
                group.start("retry poller", lambda: self._poll_due(stop))
                group.start("replay jobs", lambda: self.replays.run_jobs(stop))
                group.start("operational events", lambda: self.operational.run(stop))
                group.start("event consumer", lambda: self._consume_loop(consumer, stop))
                group.start("delivery log pruning", lambda: prune_loop(self.store, self.retention, self.metrics, stop))
        finally:
            await self._shut_down(consumer)

    def _dispatcher(self, group: Supervisor) -> Dispatcher:
        s = self.settings
        make = Dispatcher if self.tracer is None else partial(traced_dispatcher, self.tracer)
        return make(self.store, self.sender, RetryPolicy(tuple(s.retry_delays), s.retry_jitter, random.Random()),
                          self.directory, spawn=group.spawn, concurrency=s.concurrency_per_integration,
                          lane_capacity=s.lane_capacity, disable_after=timedelta(days=s.disable_after_days),
                          claim=self._claim, positions=lambda: committed_positions(self.kafka))

    async def _shut_down(self, consumer: AIOKafkaConsumer) -> None:
        self.checks.consumer.failing("stopping")
        if self.dispatcher is not None:
            await self.dispatcher.close(within=SHUTDOWN_SECONDS)
        if self._committer is not None:  # what the dispatcher's close logged is settled: commit past it, so a
            self._commit_settled()       # clean stop resends nothing (the consume loop's last commit came before)
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(self._committer.commit(), SHUTDOWN_SECONDS)
        for closing in (consumer.stop(), self.dead_letters.close()):
            try:
                await asyncio.wait_for(closing, SHUTDOWN_SECONDS)
            except (TimeoutError, KafkaError) as exc:
                log.warning("stopping: %s", exc or "Kafka did not answer in time")

    async def _consume_loop(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Take batches in; offsets are committed by a committer alongside, so the next batch need not wait."""
        if not await self._start_consumer(consumer, stop):
            return
        log.info("ready: consuming topic %s as group %s from Kafka %s; delivering to %d enabled integrations%s",
                 self.kafka.topic, self.kafka.consumer_group, self.kafka.bootstrap_servers,
                 self.directory.enabled_count(), f"; metrics on {self.metrics_url}" if self.metrics_url else "")
        assert self.dispatcher is not None
        self._committer = committer = OffsetCommitter(consumer)
        try:
            await alongside(self._take_batches(consumer, committer, stop),
                            {"offset committer": committer.run(), "routing": self._route_in_turns()})
        finally:
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(committer.commit(), SHUTDOWN_SECONDS)

    async def _take_batches(self, consumer: AIOKafkaConsumer, committer: OffsetCommitter,
                            stop: asyncio.Event) -> None:
        assert self.dispatcher is not None
        while not stop.is_set():
            while len(self._turns) >= ROUTING_READ_AHEAD and not stop.is_set():
                await asyncio.sleep(0.005)  # routing is behind: reading on would only hold more records unsettled
            await self._within_unsettled_cap(stop)
            handovers = self._handovers
            batch = await consumer.getmany(timeout_ms=200, max_records=1000)
            if not batch:
                continue
            # A rebalance's hand-over (``let_go``) waits for the batch in hand. A batch fetched before a
            # hand-over is dropped: its records are read again from the commits, by whoever owns them now.
            async with self._handing_over:
                if handovers == self._handovers:
                    self._take(batch)
                    self._note_positions(consumer, batch)
                else:  # what is still ours is read again, from the batch's first record
                    for tp, records in batch.items():
                        if tp in consumer.assignment():
                            consumer.seek(tp, records[0].offset)

    def _take(self, batch: dict[Any, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """The batch's records wait to be routed, each in its organization's turn; until then they are unsettled."""
        for tp, records in batch.items():
            for record in records:
                self.settlement.taken(tp.partition, record.offset)
                self._turns.add(_organization_of(record), record)
        self._routable.set()

    async def _route_in_turns(self) -> None:
        """Route what waits, a turn at a time, yielding between turns (``publisher.routing.turns``); runs
        beside the consumer until it ends."""
        assert self.dispatcher is not None
        while True:
            await self._routable.wait()
            await self.dispatcher.room()  # a lane that drains fast is worth waiting for: what it cannot take parks
            async with self._handing_over:
                await self._route_turn()
                if not self._turns:
                    self._routable.clear()
            await asyncio.sleep(0)  # the consumer, the lanes and the recorder go on between turns

    async def _within_unsettled_cap(self, stop: asyncio.Event) -> None:
        """Past half the cap of unsettled records, the slow lanes' live deliveries go to wait in the store (where
        they settle), so hanging endpoints cannot bring the intake to the cap; at the cap, wait for settling."""
        assert self.dispatcher is not None
        while self.settlement.unsettled() > MAX_UNSETTLED_RECORDS // 2:
            self.dispatcher.spill_slow()
            if self.settlement.unsettled() <= MAX_UNSETTLED_RECORDS or stop.is_set():
                return
            await asyncio.sleep(0.05)  # the recorder writes what was spilled; then its records are settled

    def _note_positions(self, consumer: AIOKafkaConsumer, batch: dict[Any, list[ConsumerRecord[bytes, bytes]]]
                        ) -> None:
        for tp, records in batch.items():
            self._consumed[tp.partition] = (records[-1].offset + 1, consumer.highwater(tp) or 0)

    def consumer_lag(self) -> dict[int, int]:
        """Per partition consumed here: records between the high watermark of the last fetch and what was
        consumed. (The bundled broker's watermark counts batches, so there it can read low.)"""
        return {partition: max(0, high - position) for partition, (position, high) in self._consumed.items()}

    async def _start_consumer(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> bool:
        """Join the consumer group; False if asked to stop first (joining can take a while).

        The topic is created first, with the configured partitions, when the publisher is the first
        process to reach Kafka: the consumer's metadata request would let the broker create it with
        its default count."""
        try:
            await ensure_topic(self.kafka)
        except TopicError as exc:
            raise PublisherError(str(exc)) from exc
        starting = asyncio.ensure_future(consumer.start())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not starting.done():
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
        if starting.cancelled():
            return False
        try:
            starting.result()
        except KafkaError as exc:
            raise PublisherError(f"cannot reach Kafka at {self.kafka.bootstrap_servers}: {exc}") from exc
        return True

    async def _route_turn(self) -> None:
        """Route one turn's records (``publisher.routing.turns``) and hand their deliveries out."""
        filtered: Counter[int] = Counter()
        routed = self._turns.route(lambda record: (record, self._deliveries_for(record, filtered)), TURN_SECONDS)
        await self._hand_out(routed, filtered)

    async def _hand_out(self, routed: list[tuple[ConsumerRecord[bytes, bytes], list[NewDelivery]]],
                        filtered: Counter[int]) -> None:
        """Hand routed records' deliveries to the lanes (or to the store, to wait); each record counts as routed
        only once what it left behind is written (dead letters), so no offset passes it before."""
        assert self.dispatcher is not None
        await self.dead_letters.flush()  # never commit past a record not yet dead-lettered
        self.dispatcher.recorder.count_filtered(filtered)
        for record, deliveries in routed:
            self.settlement.routed(record.partition, record.offset, len(deliveries))
        new = [delivery for _, deliveries in routed for delivery in deliveries]
        self.metrics.recorded.inc(len(new))
        while True:
            try:
                await self.dispatcher.take_live(new)
                break
            except StoreError as exc:  # nothing was handed out: the same deliveries are taken again
                log.error("cannot look for waiting deliveries, retrying: %s", exc)
                await asyncio.sleep(1.0)
        self._commit_settled()

    def _settled(self, deliveries: Sequence[NewDelivery]) -> None:
        """Live deliveries are logged or wait in the store: their records may be committed past."""
        for delivery in deliveries:
            if delivery.source_partition is not None and delivery.source_offset is not None:
                self.settlement.settle(delivery.source_partition, delivery.source_offset)
        self._commit_settled()

    def _commit_settled(self) -> None:
        if self._committer is not None:
            self._committer.recorded({TopicPartition(self.kafka.topic, partition): offset
                                      for partition, offset in self.settlement.committable().items()})

    async def let_go(self, consumer: AIOKafkaConsumer, revoked: set[TopicPartition]) -> None:
        """Partitions go to another publisher: finish what is in flight for them, commit, forget them."""
        if self.dispatcher is None or not revoked:
            return
        partitions = {tp.partition for tp in revoked}
        log.info("handing partitions %s over", sorted(partitions))
        started = asyncio.get_running_loop().time()
        async with self._handing_over:
            self._handovers += 1
            waited = asyncio.get_running_loop().time() - started
            await self._let_go(consumer, revoked, partitions)
        log.info("handed partitions %s over in %.2f s (%.2f s waiting for the batch in hand)",
                 sorted(partitions), asyncio.get_running_loop().time() - started, waited)

    async def _let_go(self, consumer: AIOKafkaConsumer, revoked: set[TopicPartition], partitions: set[int]) -> None:
        assert self.dispatcher is not None
        # Their records still waiting for a turn are routed now: left unrouted, they would hold the commit back,
        # and their new owner would resend every later record of the partition this publisher delivered.
        filtered: Counter[int] = Counter()
        waiting = self._turns.take(lambda record: record.partition in partitions)
        await self._hand_out([(record, self._deliveries_for(record, filtered)) for record in waiting], filtered)
        await self.dispatcher.let_go(partitions, self.settings.request_timeout + SHUTDOWN_SECONDS)
        committable = self.settlement.committable()
        offsets = {tp: committable[tp.partition] for tp in revoked if tp.partition in committable}
        self.settlement.forget(partitions)
        if self._committer is not None:
            self._committer.forget(revoked)
        with contextlib.suppress(KafkaError, TimeoutError):
            if offsets:
                await asyncio.wait_for(consumer.commit(offsets), SHUTDOWN_SECONDS)

    def _deliveries_for(self, record: ConsumerRecord[bytes, bytes], filtered: Counter[int]) -> list[NewDelivery]:
        try:
            event = parse_event(record.value, record.headers or ())
        except NotAnEvent as exc:
            self.dead_letters.add(record, str(exc))
            return []
        if event.organization_id is None:
            self._unrouted.note(event)
            return []
        # A backfill's rows for one integration go by its key alone (any operation): it looks at them all.
        if event.target_integration is not None:
            routed = route(self.directory.enabled_of(event.organization_id), event)
        else:  # the candidates subscribed to its key and operation, pruned by the values their conditions require
            routed = route_candidates(self.directory.candidates(event.organization_id, event.entity_key,
                                                                event.operation), event)
        filtered.update(integration.id for integration in routed.filtered)
        return [delivery_of(integration, event, record.value or b"", record.partition, record.offset)
                for integration in routed.recipients]

    async def _poll_due(self, stop: asyncio.Event) -> None:
        """Hand due retries (and deliveries others released) to the lanes, fairly (see ``Store.claim_due``).

        While an integration has more due than one claim offers, the next claim follows at once (its lane
        permitting): a backlog in the store drains as fast as the lane sends, not one share per poll."""
        assert self.dispatcher is not None
        while not stop.is_set():
            room = self.dispatcher.lane_room()
            try:
                claimed = await self.store.claim_due(self.settings.lane_capacity, self._claim, room)
            except StoreError as exc:
                log.warning("cannot look for due deliveries: %s", exc)
                claimed = []
            for delivery in claimed:
                self.dispatcher.submit(delivery)
            if not _more_due(claimed, room, self.settings.lane_capacity):
                await asyncio.sleep(self.settings.poll_interval)
            elif not any(self.dispatcher.lane_room().values()):
                await asyncio.sleep(0.02)  # every lane is full: let them send a little first


def _organization_of(record: ConsumerRecord[bytes, bytes]) -> str:
    """The organization whose turn routes ``record``: the capture's header (a record without one routes in a
    turn of its own, and is dead-lettered or noted unrouted there)."""
    for name, value in record.headers or ():
        if name == ORGANIZATION_ID:
            return value.decode("utf-8", "replace")
    return ""


def _more_due(claimed: list[Delivery], room: dict[int, int], limit: int) -> bool:
    """Whether the claim was cut short (as a whole, or an integration's offer): more may be due now."""
    if len(claimed) >= limit:
        return True
    taken = Counter(delivery.integration_id for delivery in claimed)
    return any(count >= min(CLAIM_PER_INTEGRATION, room.get(integration_id, CLAIM_PER_INTEGRATION))
               for integration_id, count in taken.items())


class _Handover(ConsumerRebalanceListener):  # type: ignore[misc]
    """Before a rebalance takes partitions away, the publisher finishes and commits what it holds of them."""

    def __init__(self, publisher: Publisher, consumer: AIOKafkaConsumer) -> None:
        self._publisher = publisher
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._publisher.let_go(self._consumer, set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._publisher.checks.consumer.passing()  # the group is joined, with or without partitions
