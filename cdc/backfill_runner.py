"""The backfill runner: a loop beside the stream that claims backfill jobs and reads them chunk by chunk.

Per chunk: read the rows and the snapshot (``cdc.backfill_source``), build their ``read`` events in
slices (so the stream gets the event loop between them), hand the chunk to the stream, write the
high mark, wait for the stream's decision and Kafka's acknowledgement, and only then keep the
cursor and counts in the store. One chunk is in memory at a time. A job paused or cancelled in
the store stops at the next chunk; a capture process killed mid-job leaves the cursor of the last
acknowledged chunk, from which the next session goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, Protocol

import psycopg

from cdc.backfill import MARK_PREFIX, BackfillStream, Outcome, PendingChunk, Unconvertible, Writer
from cdc.backfill_source import (
    ChunkRead,
    TablePlan,
    connect_reader,
    estimate_rows,
    last_key,
    plan_table,
    read_chunk,
)
from cdc.catalog import lookup_types
from cdc.entities import TableMapping, read_event
from cdc.errors import BackfillRefused, CdcError, MappingError, ReplicationLost
from cdc.pgoutput import Column, Relation
from cdc.source import connect_control
from cdc.values import UserType, is_builtin
from cdc.watermark import ChunkSizer, Key
from models.errors import StoreError
from models.headers import BACKFILL_ID, BACKFILL_INTEGRATION
from models.jobs import Backfill
from models.settings import BackfillSettings, EntitySettings, SourceSettings

log = logging.getLogger("walhook.cdc.backfill")

CLAIM = timedelta(seconds=15)  # a killed capture's job is taken over this long after its last chunk
SLICE = 200  # rows converted between two yields to the stream
MAX_AGAIN = 20  # chunks read again in a row (a racing snapshot, an overflowing watch) before giving up
TURN_SECONDS = 5.0  # a backfill works this long before another waiting one (maybe another organization's) goes


class BackfillJobs(Protocol):
    """What the runner needs of the store that keeps backfill jobs (the wiring passes the store in; capture
    never imports the delivery half). Each call may raise ``models.errors.StoreError``."""

    async def open(self) -> None: ...

    async def claim_backfill(self, tables: Sequence[str], claim_for: timedelta, claimer: str) -> Backfill | None: ...

    async def other_backfills_waiting(self, backfill_id: int, tables: Sequence[str]) -> bool: ...

    async def note_backfill_progress(self, backfill: Backfill, claim_for: timedelta) -> str: ...

    async def finish_backfill(self, backfill_id: int, state: str, error: str | None = None) -> None: ...

    async def release_backfill(self, backfill_id: int) -> None: ...


class BackfillRunner:
    """Runs the backfills of the tables this capture process captures, one at a time."""

    def __init__(self, store: BackfillJobs, settings: BackfillSettings, source: SourceSettings,
                 entities: Sequence[EntitySettings], stream: BackfillStream, relations: Callable[[], list[Relation]],
                 writer: Writer, stats: Any = None) -> None:
        self._store = store
        self._settings = settings
        self._dsn = source.dsn
        self._slot = source.slot
        self._entities = {entity.table: entity for entity in entities}
        self._stream = stream
        self._relations = relations
        self._writer = writer
        self._stats = stats
        self._mappings: dict[tuple[tuple[str, ...], tuple[int, ...]], TableMapping] = {}
        self._user_types: dict[int, UserType] = {}

    async def run(self) -> None:
        """Claim and run backfills until the session ends (a helper loop of the stream: it never returns)."""
        try:
            async with await connect_control(self._dsn) as control, await connect_reader(self._dsn) as reader:
                while True:
                    job = await self._claim()
                    if job is None:
                        await asyncio.sleep(self._settings.poll_interval)
                        continue
                    await self._run(control, reader, job)
        except psycopg.OperationalError as exc:
            raise ReplicationLost(f"backfill lost the source database: {exc}") from exc

    async def _claim(self) -> Backfill | None:
        try:
            await self._store.open()  # idempotent; capture never waits for a store that is down
            return await self._store.claim_backfill(list(self._entities), CLAIM, f"slot {self._slot}")
        except StoreError as exc:
            log.warning("cannot look for backfills: %s", exc)
            return None

    async def _run(self, control: psycopg.AsyncConnection[Any], reader: psycopg.AsyncConnection[Any],
                   job: Backfill) -> None:
        log.info("backfill %d of %s: starting after %s", job.id, job.table_name, job.cursor or "the first row")
        try:
            plan = await plan_table(control, self._entities[job.table_name], job.filter, job.organization_id)
            if job.rows_estimated is None:
                job = replace(job, rows_estimated=await estimate_rows(reader, plan))
            job = replace(job, key_columns=list(plan.key_columns))
            if self._stats is not None:
                self._stats.backfill_id = job.id
            self._stream.watch(plan.table, plan.key_columns, self._relations())
            await self._chunks(control, reader, job, plan)
        except (BackfillRefused, MappingError) as exc:
            await self._finish(job, "failed", str(exc))
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            await self._finish(job, "failed", f"reading {job.table_name} failed: {exc}")
        except CdcError:
            raise  # the stream's own trouble (source, Kafka): the session ends and the job is resumed
        except Exception as exc:  # one organization's job must never end the stream of all
            log.exception("backfill %d of %s failed", job.id, job.table_name)
            await self._finish(job, "failed", f"backfill of {job.table_name} failed: {type(exc).__name__}: {exc}")
        finally:
            self._stream.unwatch()
            if self._stats is not None:
                self._stats.backfill_id = None
            # Shielded: a session that ends (cancelling this loop) still gives the job up for the next one.
            with contextlib.suppress(StoreError):
                await asyncio.shield(self._store.release_backfill(job.id))

    async def _chunks(self, control: psycopg.AsyncConnection[Any], reader: psycopg.AsyncConnection[Any],
                      job: Backfill, plan: TablePlan) -> None:
        s = self._settings
        sizer = ChunkSizer(rows=min(job.chunk_rows or s.chunk_rows, s.max_chunk_rows),
                           maximum=s.max_chunk_rows, target=s.target_chunk_seconds, max_bytes=s.max_chunk_bytes)
        again = 0
        end = await last_key(reader, plan)
        turn_ends = time.monotonic() + TURN_SECONDS
        while True:
            started = time.monotonic()
            read = await self._read(reader, plan, job.cursor, sizer, end) if end is not None else None
            if read is None or not read.rows:
                await self._finish(job, "done")
                return
            chunk = await self._chunk(job, plan, read)
            self._stream.expect(chunk)
            await control.execute("SELECT pg_logical_emit_message(true, %s::text, %s::text)",
                                  [MARK_PREFIX, chunk.mark_content()])
            outcome = await chunk.decided
            if outcome.again:
                again += 1
                if again > MAX_AGAIN:
                    raise BackfillRefused(f"chunk after {job.cursor} could not be decided {MAX_AGAIN} times in a row")
                continue
            again = 0
            await self._emit(chunk, outcome)
            await chunk.acked.wait()
            job = self._advanced(job, chunk, sizer)
            if s.max_rows_per_second:
                await asyncio.sleep(max(0.0, started + len(chunk.keys) / s.max_rows_per_second - time.monotonic()))
            if await self._keep(job) != "running":
                log.info("backfill %d of %s: no longer running; stopped after %d rows", job.id, job.table_name,
                         job.rows_read)
                return
            if time.monotonic() > turn_ends and await self._others_waiting(job.id):
                log.info("backfill %d of %s: another backfill's turn, after %d rows", job.id, job.table_name,
                         job.rows_read)
                return  # released by the caller; it goes on from its cursor at its next turn

    async def _emit(self, chunk: PendingChunk, outcome: Outcome) -> None:
        """The surviving rows to the writer, a slice at a time; the stream runs between slices."""
        for start in range(0, len(outcome.keep), SLICE):
            started = time.perf_counter()
            self._stream.emit_slice(chunk, outcome.keep[start:start + SLICE], self._writer)
            if self._stats is not None:
                self._stats.held(time.perf_counter() - started)
            await self._writer.send_ready()  # waits while the writer is full: memory stays bounded
        self._stream.emitted(chunk)
        await self._writer.flush()

    async def _read(self, reader: psycopg.AsyncConnection[Any], plan: TablePlan, cursor: list[str] | None,
                    sizer: ChunkSizer, end: list[str] | None) -> ChunkRead:
        """One chunk at the sizer's size; a statement timeout halves it and reads again."""
        while True:
            try:
                read = await read_chunk(reader, plan, cursor, sizer.rows, self._settings.statement_timeout, end)
            except psycopg.errors.QueryCanceled as exc:
                if not sizer.timed_out():
                    raise BackfillRefused(f"even {sizer.rows} rows of {plan.table} take longer than "
                                          f"statement_timeout = {self._settings.statement_timeout}s") from exc
                log.warning("backfill chunk of %s timed out; reading %d rows instead", plan.table, sizer.rows)
                continue
            sizer.after(read.seconds, read.size_bytes)
            return read

    async def _chunk(self, job: Backfill, plan: TablePlan, read: ChunkRead) -> PendingChunk:
        """The chunk's keys and events, converted a slice at a time."""
        mapping = await self._mapping(job.table_name, read)
        positions = [read.names.index(column) for column in plan.key_columns]
        keys: list[Key] = [tuple(row[i] for i in positions) for row in read.rows]  # type: ignore[misc]
        events: list[dict[str, Any] | Unconvertible] = []
        for start in range(0, len(read.rows), SLICE):
            events.extend(_convert(mapping, row) for row in read.rows[start:start + SLICE])
            await asyncio.sleep(0)
        return PendingChunk(job.id, job.chunks, keys, events, read.snapshot, _headers(job))

    async def _mapping(self, table: str, read: ChunkRead) -> TableMapping:
        """How this chunk's columns become an event: compiled once per column list, like a Relation message."""
        signature = (read.names, read.type_oids)
        mapping = self._mappings.get(signature)
        if mapping is None:
            unknown = [oid for oid in read.type_oids if not is_builtin(oid) and oid not in self._user_types]
            if unknown:
                async with await connect_control(self._dsn) as conn:
                    self._user_types.update(await lookup_types(conn, unknown, self._user_types))
            schema, _, name = table.rpartition(".")
            relation = Relation(0, schema, name, "f", tuple(Column(column, oid, -1, False)
                                                            for column, oid in zip(*signature, strict=True)))
            mapping = self._mappings[signature] = TableMapping(self._entities[table], relation, self._user_types)
        return mapping

    def _advanced(self, job: Backfill, chunk: PendingChunk, sizer: ChunkSizer) -> Backfill:
        superseded = len(chunk.keys) - chunk.published
        if self._stats is not None:
            self._stats.backfilled(job.id, len(chunk.keys), chunk.published, superseded)
        return replace(job, cursor=[value.decode() for value in chunk.keys[-1]],
                       rows_read=job.rows_read + len(chunk.keys), rows_published=job.rows_published + chunk.published,
                       rows_superseded=job.rows_superseded + superseded, chunks=job.chunks + 1, chunk_rows=sizer.rows)

    async def _others_waiting(self, backfill_id: int) -> bool:
        try:
            return await self._store.other_backfills_waiting(backfill_id, list(self._entities))
        except StoreError:
            return False  # go on: taking turns is only fairness

    async def _keep(self, job: Backfill) -> str:
        """Write the progress (retrying while the store is down: the next chunk waits, the stream does not)."""
        while True:
            try:
                return await self._store.note_backfill_progress(job, CLAIM)
            except StoreError as exc:
                log.warning("cannot record backfill %d's progress, retrying: %s", job.id, exc)
                await asyncio.sleep(1.0)

    async def _finish(self, job: Backfill, state: str, error: str | None = None) -> None:
        (log.error if error else log.info)("backfill %d of %s: %s%s", job.id, job.table_name, state,
                                           f": {error}" if error else "")
        while True:
            try:
                await self._store.note_backfill_progress(job, CLAIM)
                await self._store.finish_backfill(job.id, state, error)
                return
            except StoreError as exc:
                log.warning("cannot record the end of backfill %d, retrying: %s", job.id, exc)
                await asyncio.sleep(1.0)


def _convert(mapping: TableMapping, row: tuple[bytes | None, ...]) -> dict[str, Any] | Unconvertible:
    try:
        return read_event(mapping, mapping.decode_row(row))
    except MappingError as exc:
        return Unconvertible({"eventTimestamp": "", "operationType": "read", "entityPath": "", "entityId": "",
                              "organizationId": None, "entityKey": mapping.entity_key,
                              "table": mapping.relation.qualified_name, "transaction": None}, exc)


def _headers(job: Backfill) -> list[tuple[str, bytes]]:
    headers = [(BACKFILL_ID, str(job.id).encode())]
    if job.integration_id is not None:
        headers.append((BACKFILL_INTEGRATION, str(job.integration_id).encode()))
    return headers
