"""The capture pipeline: replication stream -> events -> Kafka -> confirmed LSN.

``CapturePipeline.run`` is one session on one replication connection, with a second,
ordinary connection for control work: catalog lookups, heartbeats and slot lag.
``run_capture`` supervises sessions: a lost connection is retried with backoff and
resumes from the slot; configuration and source errors stop the process with their message.
Each session first identifies the server (system identifier, timeline) and lets the ``SlotKeeper``
refuse a slot that vanished; while streaming, the confirmed position is remembered in the store
and the heartbeat also reads each standby's copy of a failover slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import psycopg
from opentelemetry.trace import Tracer
from psycopg.conninfo import conninfo_to_dict

from cdc.backfill import MARK_PREFIX, BackfillStream
from cdc.backfill_runner import BackfillJobs, BackfillRunner
from cdc.backoff import Backoff
from cdc.catalog import lookup_types
from cdc.checkpoint import AckTracker, TransactionAcks
from cdc.entities import EventBuilder, TransactionContext
from cdc.errors import MappingError, PositionUnknown, ReplicationLost, SlotBusyError
from cdc.failover import StandbyReadiness, check_standbys, nudge_catalog_xmin, standby_targets
from cdc.identity import IdentityChoice, identity_summary
from cdc.kafka import KafkaWriter
from cdc.lsn import format_lsn
from cdc.memory import ServerIdentity, SlotKeeper
from cdc.moves import PartitionMoves
from cdc.pgoutput import Begin, Commit, Delete, Insert, LogicalMessage, Message, Relation, Truncate, Update, decode
from cdc.protocol import Keepalive, parse_copy_data, standby_status_update, xlog_payload
from cdc.readiness import CaptureChecks
from cdc.rowpath import RowEncoder, use_compiled
from cdc.source import (
    adopt_new_partitions,
    connect_control,
    partitioned_roots,
    prepare_slot,
    prepare_source,
    slot_lag_bytes,
)
from cdc.topics import ensure_topic
from cdc.tracing import TracedKafkaWriter
from cdc.transport import ReplicationConnection
from cdc.values import is_builtin
from models.logs import ids
from models.settings import BackfillSettings, EntitySettings, KafkaSettings, SourceSettings
from models.supervision import alongside

log = logging.getLogger("walhook.cdc")

HEARTBEAT_PREFIX = "walhook.heartbeat"
REMEMBER_EVERY = 5.0  # seconds between writes of the confirmed position to the store
_ROW_CHANGES = frozenset((Insert, Update, Delete))
_ROW_TAGS = frozenset(b"IUD")


def database_of(dsn: str) -> str:
    """``host:port/dbname`` of a DSN, without its user or password (for log lines)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the source database"
    return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"


@dataclass
class CaptureStats:
    """What an operator watches: throughput, position, lag and the heartbeat's round trip."""

    events_captured: int = 0
    events_dead_lettered: int = 0  # changes recorded on the capture dead-letter topic instead
    confirmed_lsn: int = 0
    slot_lag_bytes: int | None = None
    last_heartbeat_seen: float | None = None  # time.monotonic()
    reconnects: int = 0
    failover_slot: bool | None = None  # None until known (and on servers before 17)
    standbys: list[StandbyReadiness] | None = None  # None: no standby configured or seen
    backfill_id: int | None = None  # the backfill running now, if any
    backfill_rows_read: int = 0
    backfill_rows_published: int = 0
    backfill_rows_superseded: int = 0
    backfill_longest_hold: float = 0.0  # seconds: the longest a backfill held the stream (a decision, a slice)
    checks: CaptureChecks = field(default_factory=CaptureChecks)  # what /readyz reads

    def held(self, seconds: float) -> None:
        self.backfill_longest_hold = max(self.backfill_longest_hold, seconds)

    def backfilled(self, backfill_id: int, read: int, published: int, superseded: int) -> None:
        """Count one chunk Kafka acknowledged."""
        self.backfill_id = backfill_id
        self.backfill_rows_read += read
        self.backfill_rows_published += published
        self.backfill_rows_superseded += superseded

    def dead_lettered(self) -> None:
        """Count one change recorded on the dead-letter topic (called once the record is written)."""
        self.events_dead_lettered += 1

    def heartbeat_age(self, now: float | None = None) -> float | None:
        if self.last_heartbeat_seen is None:
            return None
        return (now if now is not None else time.monotonic()) - self.last_heartbeat_seen


class CapturePipeline:
    """One replication session, from START_REPLICATION until the stream ends or ``stop`` is set."""

    def __init__(self, source: SourceSettings, kafka: KafkaSettings, entities: list[EntitySettings],
                 stats: CaptureStats | None = None, keeper: SlotKeeper | None = None, store: BackfillJobs | None = None,
                 backfill: BackfillSettings | None = None, tracer: Tracer | None = None) -> None:
        self.source = source
        self.keeper = keeper or SlotKeeper(None)
        self.kafka = kafka
        self.entities = entities
        self.stats = stats or CaptureStats()
        self.tracker = AckTracker()
        self._builder = EventBuilder(entities)
        # The row path is chosen once per pipeline: the compiled one unless [source] row_path says otherwise.
        self._encoder = RowEncoder(self._builder, source.environment) if use_compiled(source.row_path) else None
        self._transaction: TransactionContext | None = None
        self._acks: TransactionAcks | None = None
        self._index = 0
        self._control: psycopg.AsyncConnection | None = None
        self._server: ServerIdentity | None = None
        self.store = store  # backfills run only with a store
        self.backfill_settings = backfill or BackfillSettings()
        self.backfills = BackfillStream()
        self.identities: list[IdentityChoice] = []  # each captured relation's replica identity, once prepared
        self._relations_seen: set[str] = set()  # those and the partitions attached since (or refused)
        self._moves: PartitionMoves | None = None  # joins a row's move between partitions into one update
        self.tracer = tracer  # [tracing] on: each change starts a trace (cdc.tracing); off: None, and no cost

    async def run(self, stop: asyncio.Event, on_connected: Callable[[], None] | None = None) -> None:
        self.identities = await prepare_source(self.source, self.entities)
        self._relations_seen = {choice.relation for choice in self.identities}
        roots = await partitioned_roots(self.source.dsn, [entity.table for entity in self.entities])
        self._moves = PartitionMoves(roots, self._same_entity) if roots else None
        # Kafka before the slot: a first start that cannot reach Kafka must not leave a slot holding WAL.
        await ensure_topic(self.kafka)
        if self.kafka.capture_dead_letter_topic:
            await ensure_topic(self.kafka, self.kafka.capture_dead_letter_topic)
        async with ReplicationConnection(self.source.dsn) as conn:
            self._server = server = await conn.identify_system()
            slot = await prepare_slot(self.source, server, self.keeper)
            if slot.needs_failover:  # Postgres refuses this while another walsender holds the slot
                await conn.command(f'ALTER_REPLICATION_SLOT "{slot.name}" (FAILOVER true)')
                log.info("switched replication slot %s to a failover slot", slot.name)
            self.stats.failover_slot = slot.failover
            await self.keeper.remember(server, slot.name, slot.confirmed_flush_lsn)
            await self._stream_session(conn, slot.confirmed_flush_lsn, stop, on_connected)

    async def _stream_session(self, conn: ReplicationConnection, start_lsn: int, stop: asyncio.Event,
                              on_connected: Callable[[], None] | None) -> None:
        self.tracker = AckTracker(start_lsn)
        self.stats.confirmed_lsn = start_lsn
        make = KafkaWriter if self.tracer is None else partial(TracedKafkaWriter, self.tracer, self.source.slot)
        writer = make(self.kafka, self._acknowledged, environment=self.source.environment,
                             on_dead_letter=self.stats.dead_lettered,
                             tables={entity.entity_key: entity.table for entity in self.entities})
        async with await _connect(self.source.dsn) as control, writer:
            self._control = control
            await conn.start(self.source.slot, self.source.publication)
            log.info("ready: streaming slot %s of %s from %s into topic %s on Kafka %s (%d tables; %s)%s",
                     self.source.slot, database_of(self.source.dsn), format_lsn(start_lsn),
                     self.kafka.topic, self.kafka.bootstrap_servers, len(self.entities),
                     identity_summary(self.identities),
                     f"; metrics on http://{self.source.metrics_address}/metrics" if self.source.metrics_address
                     else "", extra=ids(lsn=format_lsn(start_lsn)))
            self.stats.checks.streaming()
            if on_connected is not None:
                on_connected()
            helpers = {"status reports": self._report_status(conn), "position memory": self._remember()}
            if self.source.heartbeat_interval:
                helpers["heartbeats"] = self._heartbeat()
            if self.store is not None:
                helpers["backfills"] = BackfillRunner(
                    self.store, self.backfill_settings, self.source, self.entities, self.backfills,
                    self._builder.relations, writer, self.stats).run()
            await alongside(self._stream(conn, writer, stop), helpers)
            await writer.close()  # flush: every produced event acknowledged before the last report
            writer.raise_if_failed()
            await self._send_status(conn)
            await self._remember_now()

    async def _stream(self, conn: ReplicationConnection, writer: KafkaWriter, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                reading = asyncio.create_task(conn.read(on_idle=writer.send_due))
                await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    reading.cancel()
                    return
                encoder, moves = self._encoder, self._moves
                for raw in reading.result():
                    for payload in moves.feed(xlog_payload(raw)) if moves else (xlog_payload(raw),):
                        # Row changes, nearly every message, take the synchronous path: no coroutine each.
                        if (encoder is not None and payload is not None and payload[0] in _ROW_TAGS
                                and not (self.backfills.watches and _relation_oid(payload) in self.backfills.watches)
                                and self._encoded(encoder, bytes(payload), writer)):
                            continue
                        message = decode(payload) if payload is not None else None
                        if type(message) in _ROW_CHANGES:
                            self._change(message, writer)  # type: ignore[arg-type]
                        else:
                            await self._handle(raw, message, conn, writer)
                await writer.send_ready()
        finally:
            stopping.cancel()

    async def _handle(self, raw: bytes | memoryview, message: Message | None, conn: ReplicationConnection,
                      writer: KafkaWriter) -> None:
        """Everything but row changes: keepalives, transaction bounds, schema, truncates, messages."""
        if message is None:
            frame = parse_copy_data(raw)
            if isinstance(frame, Keepalive):
                self.tracker.idle_at(frame.wal_end)
                if frame.reply_requested:
                    await self._send_status(conn)
                return
            message = decode(frame.payload)
        if isinstance(message, Insert | Update | Delete):
            self._change(message, writer)
        elif isinstance(message, Begin):
            self.backfills.recent.saw(message.xid)
            self._transaction = TransactionContext(message.xid, message.final_lsn, message.commit_time_us)
            self._acks = self.tracker.begin()
            self._index = 0
        elif isinstance(message, Commit):
            assert self._acks is not None
            self.tracker.commit(self._acks, message.end_lsn)
            self._transaction = self._acks = None
        elif isinstance(message, Relation):
            await self._relation(message)
        elif isinstance(message, Truncate):
            await self._truncate(message, writer)
        elif isinstance(message, LogicalMessage):
            self._logical_message(message, writer)

    def _change(self, change: Insert | Update | Delete, writer: KafkaWriter) -> None:
        assert self._transaction is not None and self._acks is not None, "row change outside a transaction"
        watch = self.backfills.watches.get(change.relation_oid) if self.backfills.watches else None
        if watch is not None:  # a backfill reads this table: note which row the stream changed, and when
            watch.note(self._transaction.xid, change.new if type(change) is not Delete else None,  # type: ignore[union-attr]
                       change.old if type(change) is not Insert else None)  # type: ignore[union-attr]
        try:
            event = self._builder.build(change, self._transaction, self._index)
        except MappingError as exc:
            if not self.kafka.capture_dead_letter_topic:
                raise
            # A row that cannot be converted (e.g. bytes that are not UTF-8) must not stop the stream.
            self.tracker.sent(self._acks)
            writer.dead_letter(self._builder.unbuildable(change, self._transaction, self._index), exc, self._acks)
            event = None
        self._index += 1
        if event is None:
            return
        if type(event) is tuple:  # a row moved to another organization: deleted there, created here
            for each in event:
                self._send(each, writer)
        else:
            self._send(event, writer)  # type: ignore[arg-type]

    def _same_entity(self, delete: bytes, insert: bytes) -> bool:
        """Whether a DELETE and the INSERT after it name one entity (one row moved between partitions)."""
        removed, added = decode(delete), decode(insert)
        mapping = self._builder.mapping(removed.relation_oid)  # type: ignore[union-attr]
        if mapping is None or not isinstance(removed, Delete) or not isinstance(added, Insert):
            return False
        try:
            return bool(mapping.entity_path(mapping.decode_row(removed.old)) ==
                        mapping.entity_path(mapping.decode_row(added.new)))
        except (MappingError, KeyError, TypeError, ValueError):
            return False  # unreadable: leave them as they came

    def _encoded(self, encoder: RowEncoder, payload: bytes, writer: KafkaWriter) -> bool:
        """The compiled row path; False hands the change to the reference path (``_change``)."""
        acks = self._acks
        assert self._transaction is not None and acks is not None, "row change outside a transaction"
        encoded = encoder.encode(payload, self._transaction, self._index)
        if encoded is None:
            return False
        self._index += 1
        self.tracker.sent(acks)
        writer.append_record(*encoded, acks)
        self.stats.events_captured += 1
        return True

    def _send(self, event: dict[str, object], writer: KafkaWriter) -> None:
        acks = self._acks
        assert acks is not None
        self.tracker.sent(acks)
        writer.append(event, acks)
        self.stats.events_captured += 1

    async def _relation(self, relation: Relation) -> None:
        """Compile the table's mapping; look up user-defined column types first."""
        unknown = [c.type_oid for c in relation.columns
                   if not is_builtin(c.type_oid) and c.type_oid not in self._builder.user_types]
        if unknown and self._builder.wants(relation):
            assert self._control is not None
            self._builder.user_types.update(await lookup_types(self._control, unknown, self._builder.user_types))
        self._builder.on_relation(relation)
        if self._encoder is not None:
            self._encoder.forget(relation.oid)
        self.backfills.on_relation(relation)

    async def _truncate(self, truncate: Truncate, writer: KafkaWriter) -> None:
        assert self._transaction is not None
        for oid in truncate.relation_oids:
            mapping = self._builder.mapping(oid)
            if mapping is None:
                continue
            if self.source.truncate == "skip":
                log.warning("TRUNCATE of %s skipped ([source] truncate = \"skip\")", mapping.relation.qualified_name)
                continue
            self._send(self._builder.truncate_event(mapping, self._transaction, self._index), writer)
            self._index += 1

    def _acknowledged(self, token: object, events: int) -> None:
        """The writer's acknowledgement: a transaction's events, or a backfill chunk's."""
        if type(token) is TransactionAcks:
            self.tracker.acknowledged(token, events)
        else:
            token.acknowledged(events)  # type: ignore[attr-defined]

    def _logical_message(self, message: LogicalMessage, writer: KafkaWriter) -> None:
        if message.prefix == MARK_PREFIX:
            started = time.perf_counter()  # a chunk's decision holds the stream: part of the stated bound
            self.backfills.at_mark(message, self._transaction)
            self.stats.backfill_longest_hold = max(self.stats.backfill_longest_hold, time.perf_counter() - started)
        if message.prefix == HEARTBEAT_PREFIX:
            self.stats.last_heartbeat_seen = time.monotonic()
        if not message.transactional:
            self.tracker.idle_at(message.lsn)  # nothing before it is pending: the slot may move on

    async def _report_status(self, conn: ReplicationConnection) -> None:
        while True:
            await asyncio.sleep(self.source.status_interval)
            await self._send_status(conn)

    async def _send_status(self, conn: ReplicationConnection) -> None:
        lsn = self.tracker.confirmed_lsn
        await conn.send(standby_status_update(lsn))
        self.stats.confirmed_lsn = lsn

    async def _remember(self) -> None:
        while True:
            await asyncio.sleep(REMEMBER_EVERY)
            await self._remember_now()

    async def _remember_now(self) -> None:
        assert self._server is not None
        await self.keeper.remember(self._server, self.source.slot, self.stats.confirmed_lsn)

    async def _check_failover(self) -> None:
        """Each standby's copy of the slot; a temporary copy gets a standby snapshot logged to move it on."""
        if not standby_targets(self.source):
            return
        self.stats.standbys = await check_standbys(self.source)
        if any("temporary" in standby.reason for standby in self.stats.standbys):
            assert self._control is not None
            await nudge_catalog_xmin(self._control)
        for standby in self.stats.standbys:
            if not standby.ready:
                log.warning("slot %s is not failover-ready on standby %s", self.source.slot, standby.describe())

    async def _heartbeat(self) -> None:
        """Emit a WAL message so an idle slot still advances, then log lag and the heartbeat's age."""
        assert self._control is not None
        while True:
            try:
                await self._control.execute("SELECT pg_logical_emit_message(false, %s, now()::text)",
                                            [HEARTBEAT_PREFIX])
                self.identities += await adopt_new_partitions(
                    self._control, self.entities, self.source.set_replica_identity_full, self._relations_seen)
                self.stats.slot_lag_bytes = await slot_lag_bytes(self._control, self.source.slot)
                await self._check_failover()
            except psycopg.Error as exc:
                log.warning("heartbeat failed: %s", exc)
            self._log_health()
            await asyncio.sleep(self.source.heartbeat_interval)

    def _log_health(self) -> None:
        lag, age = self.stats.slot_lag_bytes, self.stats.heartbeat_age()
        limit = self.source.max_slot_lag_bytes
        if lag is not None and limit is not None and lag > limit:
            log.error("slot %s lags %d bytes behind the server, over max_slot_lag_bytes = %d: WAL is piling up "
                      "on the database server", self.source.slot, lag, limit)
        log.info("slot %s: confirmed %s, lag %s bytes, last heartbeat seen %s, %d events captured",
                 self.source.slot, format_lsn(self.stats.confirmed_lsn), lag,
                 "never" if age is None else f"{age:.1f}s ago", self.stats.events_captured,
                 extra=ids(lsn=format_lsn(self.stats.confirmed_lsn)))


def _relation_oid(payload: bytes | memoryview) -> int:
    """The relation of an Insert, Update or Delete message (bytes 1-4): a table a backfill watches takes the
    reference path, which hands the stream's keys to the backfill."""
    return int.from_bytes(payload[1:5], "big")


async def _connect(dsn: str) -> psycopg.AsyncConnection:
    try:
        return await connect_control(dsn)
    except psycopg.OperationalError as exc:
        raise ReplicationLost(f"cannot connect to the source database: {exc}") from exc


async def run_capture(source: SourceSettings, kafka: KafkaSettings, entities: list[EntitySettings],
                      stop: asyncio.Event, backoff: Backoff | None = None, stats: CaptureStats | None = None,
                      keeper: SlotKeeper | None = None, store: BackfillJobs | None = None,
                      backfill: BackfillSettings | None = None, tracer: Tracer | None = None) -> None:
    """Run capture until ``stop`` is set, reconnecting with backoff when the connection drops.

    With a ``store``, the capture also runs the backfills of its tables (``cdc.backfill_runner``); with a
    ``tracer`` (``[tracing]`` on), each change starts a trace (``cdc.tracing``)."""
    keeper = keeper or SlotKeeper(None)
    try:
        await _supervise(source, kafka, entities, stop, backoff or Backoff(), stats or CaptureStats(), keeper,
                         store, backfill, tracer)
    finally:
        await keeper.close()


async def _supervise(source: SourceSettings, kafka: KafkaSettings, entities: list[EntitySettings],
                     stop: asyncio.Event, backoff: Backoff, stats: CaptureStats, keeper: SlotKeeper,
                     store: BackfillJobs | None, backfill: BackfillSettings | None, tracer: Tracer | None) -> None:
    busy_since: float | None = None
    while not stop.is_set():
        pipeline = CapturePipeline(source, kafka, entities, stats, keeper, store, backfill, tracer)
        try:
            await pipeline.run(stop, on_connected=lambda: backoff.connected(time.monotonic()))
        except SlotBusyError as exc:
            stats.checks.interrupted(str(exc))
            # Right after a crash the old walsender may hold the slot a little longer.
            if busy_since is None:
                busy_since = time.monotonic()
            if time.monotonic() - busy_since > source.slot_busy_timeout:
                raise
            log.warning("%s; waiting for it to be released", exc)
            await _pause(stop, 1.0)
        except (ReplicationLost, PositionUnknown, psycopg.OperationalError) as exc:
            stats.reconnects += 1
            stats.checks.interrupted(str(exc))
            delay = backoff.next_delay(time.monotonic())
            log.warning("%s; reconnecting in %.1fs", exc, delay)
            await _pause(stop, delay)
        else:
            busy_since = None


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
