"""A backfill inside the stream: the keys it watches, the chunk waiting for its high mark, its emission.

The stream loop calls in synchronously: ``recent.saw`` for every transaction, the watch's ``note``
for every change of the watched table, ``on_relation`` for schema messages and ``at_mark`` for the
backfill's logical messages. At its mark a chunk is only decided (which rows survive), which is
quick; the runner (``cdc.backfill_runner``) then emits the survivors a slice at a time with
``emit_slice``, while the stream goes on: a change the stream sees after the mark takes its row
out of those still waiting, because the change is newer. So the rule holds whenever a row goes out.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from cdc.entities import TransactionContext, stamp_read
from cdc.pgoutput import LogicalMessage, Relation
from cdc.watermark import Key, KeyWatch, RecentTransactions, Snapshot, survivors
from models.events import read_event_id

log = logging.getLogger("walhook.cdc")

MARK_PREFIX = "walhook.backfill.high"


class Writer(Protocol):
    """What a backfill needs of the stream's Kafka writer (``cdc.kafka.KafkaWriter``)."""

    def append(self, event: dict[str, Any], token: object, extra_headers: list[tuple[str, bytes]] | None = None
               ) -> None: ...

    def dead_letter(self, event: dict[str, Any], error: BaseException, token: object) -> None: ...

    async def send_ready(self) -> None: ...

    async def flush(self) -> None: ...


@dataclass(frozen=True)
class Unconvertible:
    """A row of a chunk that could not become an event: it goes to the capture dead-letter topic instead."""

    record: dict[str, Any]
    error: BaseException


@dataclass(frozen=True)
class Outcome:
    """What the high mark decided: the positions of the rows that survive, or read the chunk again."""

    keep: tuple[int, ...] = ()
    again: bool = False


class PendingChunk:
    """One chunk between its read and Kafka's acknowledgement of what it published (the acks token)."""

    def __init__(self, backfill_id: int, number: int, keys: list[Key], events: Sequence[dict[str, Any] | Unconvertible],
                 snapshot: Snapshot, headers: list[tuple[str, bytes]]) -> None:
        self.backfill_id = backfill_id
        self.number = number
        self.keys = keys
        self.events = events
        self.snapshot = snapshot
        self.headers = headers
        self.decided: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.acked = asyncio.Event()
        self.mark_transaction: TransactionContext | None = None
        self.published = 0
        self._pending = 0
        self._emitting = True
        # Unique per read: a mark written by an earlier session (or for an earlier read of this chunk) sits
        # before this read's snapshot in the WAL and must not be taken for this read's mark.
        self.mark = orjson.dumps({"backfill": backfill_id, "chunk": number, "read": secrets.token_hex(8)})

    def mark_content(self) -> str:
        return self.mark.decode()

    def sent(self) -> None:
        self._pending += 1

    def acknowledged(self, events: int = 1) -> None:
        """Kafka has ``events`` more of the chunk's events (the writer's acknowledgement callback)."""
        self._pending -= events
        if self._pending <= 0 and not self._emitting:
            self.acked.set()

    def decide(self, outcome: Outcome) -> None:
        if not self.decided.done():
            self.decided.set_result(outcome)

    def emitted(self) -> None:
        """Every surviving row went to the writer; ``acked`` follows Kafka's last acknowledgement."""
        self._emitting = False
        if self._pending <= 0:
            self.acked.set()


class BackfillStream:
    """The stream's side of the running backfill (at most one at a time per capture session)."""

    def __init__(self) -> None:
        self.recent = RecentTransactions()
        self.watches: dict[int, KeyWatch] = {}  # relation oid -> the watch, looked up for every change
        self._watch: KeyWatch | None = None
        self._table: str | None = None
        self._key_columns: tuple[str, ...] = ()
        self._chunk: PendingChunk | None = None

    def watch(self, table: str, key_columns: Sequence[str], relations: Sequence[Relation]) -> None:
        """Start noting the keys the stream changes in ``table``; transactions seen so far count as before."""
        self._watch = KeyWatch((), self.recent.snapshot())
        self._table, self._key_columns = table, tuple(key_columns)
        self.watches.clear()
        for relation in relations:
            self.on_relation(relation)

    def unwatch(self) -> None:
        if self._chunk is not None:
            self._chunk.decide(Outcome(again=True))
        self._watch = self._table = self._chunk = None
        self.watches.clear()

    def on_relation(self, relation: Relation) -> None:
        """A (new) schema of the watched table: the key columns' positions in its tuples."""
        if self._watch is None or relation.qualified_name != self._table:
            return
        names = [column.name for column in relation.columns]
        missing = [column for column in self._key_columns if column not in names]
        if missing:  # a key column renamed or dropped mid-backfill: no change can be matched to a row now
            log.error("backfill of %s: key column(s) %s no longer in the table", self._table, ", ".join(missing))
            self._watch.overflowed = True
            return
        self._watch.positions = tuple(names.index(column) for column in self._key_columns)
        self.watches[relation.oid] = self._watch

    def expect(self, chunk: PendingChunk) -> None:
        """The chunk whose high mark is about to be written."""
        self._chunk = chunk

    def at_mark(self, message: LogicalMessage, mark: TransactionContext | None) -> None:
        """A backfill's high mark reached the stream: decide which rows of the chunk survive, here and now."""
        chunk = self._chunk
        if chunk is None or mark is None or message.content != chunk.mark:
            return  # the mark of a chunk an earlier session read: that chunk is read again anyway
        self._chunk = None
        watch = self._watch
        assert watch is not None
        if watch.unsafe(chunk.snapshot):
            if watch.overflowed:
                watch.restart(self.recent.snapshot())
            chunk.decide(Outcome(again=True))
            return
        keep = survivors(chunk.keys, watch.superseded(chunk.snapshot))
        watch.decided(chunk.snapshot)
        watch.before = frozenset()  # a later snapshot sees whatever this one did not have running
        watch.pending = {chunk.keys[position]: position for position in keep}
        chunk.mark_transaction = mark
        chunk.decide(Outcome(keep=tuple(keep)))

    def emit_slice(self, chunk: PendingChunk, positions: Sequence[int], writer: Writer) -> None:
        """Hand these surviving rows to the writer, but those a change after the mark took out (synchronous)."""
        watch, mark = self._watch, chunk.mark_transaction
        assert watch is not None and watch.pending is not None and mark is not None
        for position in positions:
            if watch.pending.pop(chunk.keys[position], None) is None:
                continue  # the stream changed the row after the mark: its change is newer than this read
            self._emit(chunk, chunk.events[position], mark, chunk.published, writer)
            chunk.published += 1

    def emitted(self, chunk: PendingChunk) -> None:
        if self._watch is not None:
            self._watch.pending = None
        chunk.emitted()

    @staticmethod
    def _emit(chunk: PendingChunk, event: dict[str, Any] | Unconvertible, mark: TransactionContext, index: int,
              writer: Writer) -> None:
        event_id = read_event_id(mark.commit_lsn, chunk.backfill_id, index)
        chunk.sent()
        if isinstance(event, Unconvertible):
            writer.dead_letter({**event.record, "eventId": event_id}, event.error, chunk)
            return
        stamp_read(event, mark, event_id, index)
        writer.append(event, chunk, chunk.headers)
