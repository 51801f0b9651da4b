"""The capture pipeline: replication stream -> events -> Kafka -> confirmed LSN.

``CapturePipeline.run`` is one session on one replication connection. ``run_capture``
supervises sessions: a lost connection is retried with backoff and resumes from the slot;
configuration and source errors stop the process with their message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from cdc.backoff import Backoff
from cdc.checkpoint import AckTracker, TransactionAcks
from cdc.entities import EventBuilder, TransactionContext
from cdc.errors import ReplicationLost
from cdc.kafka import KafkaWriter, ensure_topic
from cdc.lsn import format_lsn
from cdc.pgoutput import Begin, Commit, Delete, Insert, Relation, Truncate, Update, decode
from cdc.protocol import Keepalive, parse_copy_data, standby_status_update
from cdc.source import prepare_source
from cdc.transport import ReplicationConnection
from models.settings import EntitySettings, KafkaSettings, SourceSettings

log = logging.getLogger("walhook.cdc")


class CapturePipeline:
    """One replication session, from START_REPLICATION until the stream ends or ``stop`` is set."""

    def __init__(self, source: SourceSettings, kafka: KafkaSettings, entities: list[EntitySettings]) -> None:
        self.source = source
        self.kafka = kafka
        self.entities = entities
        self.tracker = AckTracker()
        self.events_captured = 0
        self._builder = EventBuilder(entities)
        self._transaction: TransactionContext | None = None
        self._acks: TransactionAcks | None = None
        self._index = 0
        self._reported_lsn = -1

    async def run(self, stop: asyncio.Event, on_connected: object = None) -> None:
        slot = await prepare_source(self.source, [entity.table for entity in self.entities])
        self.tracker = AckTracker(slot.confirmed_flush_lsn)
        await ensure_topic(self.kafka)
        async with KafkaWriter(self.kafka) as writer, ReplicationConnection(self.source.dsn) as conn:
            await conn.start(self.source.slot, self.source.publication)
            log.info("streaming slot %s from %s", self.source.slot, format_lsn(slot.confirmed_flush_lsn))
            if callable(on_connected):
                on_connected()
            status = asyncio.create_task(self._report_status(conn))
            try:
                await self._stream(conn, writer, stop)
                await writer.close()  # flush: every produced event acknowledged before the last report
                writer.raise_if_failed()
                await self._send_status(conn)
            finally:
                status.cancel()

    async def _stream(self, conn: ReplicationConnection, writer: KafkaWriter, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                reading = asyncio.create_task(conn.read())
                await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    reading.cancel()
                    return
                for raw in reading.result():
                    await self._handle(raw, conn, writer)
        finally:
            stopping.cancel()

    async def _handle(self, raw: bytes | memoryview, conn: ReplicationConnection, writer: KafkaWriter) -> None:
        frame = parse_copy_data(raw)
        if isinstance(frame, Keepalive):
            self.tracker.idle_at(frame.wal_end)
            if frame.reply_requested:
                await self._send_status(conn)
            return
        message = decode(frame.payload)
        if isinstance(message, Insert | Update | Delete):
            await self._change(message, writer)
        elif isinstance(message, Begin):
            self._transaction = TransactionContext(message.xid, message.final_lsn, message.commit_time_us)
            self._acks = self.tracker.begin()
            self._index = 0
        elif isinstance(message, Commit):
            assert self._acks is not None
            self.tracker.commit(self._acks, message.end_lsn)
            self._transaction = self._acks = None
        elif isinstance(message, Relation):
            self._builder.on_relation(message)
        elif isinstance(message, Truncate):
            log.warning("TRUNCATE of relation(s) %s is not captured yet", message.relation_oids)

    async def _change(self, change: Insert | Update | Delete, writer: KafkaWriter) -> None:
        assert self._transaction is not None and self._acks is not None, "row change outside a transaction"
        event = self._builder.build(change, self._transaction, self._index)
        self._index += 1
        if event is None:
            return
        acks = self._acks
        self.tracker.sent(acks)
        await writer.send(event, lambda: self.tracker.acknowledged(acks))
        self.events_captured += 1

    async def _report_status(self, conn: ReplicationConnection) -> None:
        while True:
            await asyncio.sleep(self.source.status_interval)
            await self._send_status(conn)

    async def _send_status(self, conn: ReplicationConnection) -> None:
        lsn = self.tracker.confirmed_lsn
        await conn.send(standby_status_update(lsn))
        if lsn != self._reported_lsn:
            log.debug("confirmed %s", format_lsn(lsn))
            self._reported_lsn = lsn


async def run_capture(source: SourceSettings, kafka: KafkaSettings, entities: list[EntitySettings],
                      stop: asyncio.Event, backoff: Backoff | None = None) -> None:
    """Run capture until ``stop`` is set, reconnecting with backoff when the connection drops."""
    backoff = backoff or Backoff()
    while not stop.is_set():
        pipeline = CapturePipeline(source, kafka, entities)
        try:
            await pipeline.run(stop, on_connected=lambda: backoff.connected(time.monotonic()))
        except ReplicationLost as exc:
            delay = backoff.next_delay(time.monotonic())
            log.warning("%s; reconnecting in %.1fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
