"""Replay jobs: deliver an integration's events again, read back from Kafka, in the background.

Kafka keeps the events, so a replay needs no copy of them in the store: a job reads the topic
from an offset (every partition) or a moment (``offsets_for_times``), keeps what the
integration receives (``publisher.routing.recipients``, as live delivery does) and schedules it. The
publishers deliver those like any other; each keeps its ``webhook-id``, so receivers can
deduplicate.

A job ends where the topic ended when it started: per partition, at the end offset taken then,
or - because some brokers' end offsets count batches rather than records - at the first record
past that offset written after the job started. Progress is kept per partition after each
batch is scheduled, so a job resumes where it stopped if its publisher dies, and a cancel
takes effect before the next read (a job cancelled before it ran reads nothing). A job that fails
for any reason, whatever its input, ends ``failed`` with the reason, and the loop goes on.

Jobs share a publisher in turns: after ``SLICE_SECONDS`` of work, a job whose batch is kept gives
the publisher up if another job waits, and the store hands the next turn fairly (an enable's
catch-up first, then the organization served longest ago; see ``Store.claim_replay_job``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from models.errors import StoreError
from models.logs import ids
from models.settings import KafkaSettings
from publisher.errors import NotAnEvent, PublisherError
from publisher.routing.recipients import delivery_of, parse_event, receives
from publisher.settling.positions import partitions_of
from publisher.store import Integration, NewDelivery, ReplayJob, Scheduled

log = logging.getLogger("walhook.publisher")

SLICE_SECONDS = 2.0
"""How long a publisher works on one job before it lets a waiting one (maybe another organization's) go first."""
YIELDED = "yielded"


def start_offset(found: object | None) -> int | None:
    """Where a replay by time starts in a partition, from its ``offsets_for_times`` answer.

    None when the partition holds nothing at or after that time: Apache Kafka answers None,
    the bundled broker an offset with timestamp -1.
    """
    if found is None or getattr(found, "timestamp", -1) < 0:
        return None
    return int(found.offset)  # type: ignore[attr-defined]


@dataclass
class Boundary:
    """Where a job stops in one partition: pure, told each record's offset and timestamp."""

    end_offset: int
    started_ms: int
    done: bool = False
    quiet_rounds: int = 0

    def past(self, offset: int, timestamp_ms: int) -> bool:
        """Whether this record lies beyond the job's end (it is live delivery's, not the replay's)."""
        if offset >= self.end_offset and timestamp_ms > self.started_ms:
            self.done = True
        return self.done

    def quiet(self, position: int, highwater: int | None) -> None:
        """A fetch round brought nothing: two in a row at or past the end, and the partition is done."""
        self.quiet_rounds = self.quiet_rounds + 1 if position >= max(self.end_offset, highwater or 0) else 0
        self.done = self.done or self.quiet_rounds >= 2


@dataclass
class Progress:
    """A job's counts and per-partition positions, as kept in the store."""

    positions: dict[int, int] = field(default_factory=dict)
    scanned: int = 0
    scheduled: int = 0


class ReplayStore(Protocol):
    """What a replay runner needs of the store: the jobs, their integration, and the deliveries they schedule."""

    async def claim_replay_job(self, claim_for: timedelta) -> ReplayJob | None: ...

    async def others_waiting(self, job_id: int) -> bool: ...

    async def yield_replay_job(self, job_id: int) -> None: ...

    async def note_replay_progress(self, job_id: int, *, progress: dict[int, int], scanned: int, scheduled: int,
                                   end_positions: dict[int, int] | None, claim_for: timedelta) -> bool: ...

    async def finish_replay_job(self, job_id: int, state: str, error: str | None = None) -> None: ...

    async def integration(self, integration_id: int) -> Integration: ...

    async def schedule_replay(self, deliveries: Sequence[NewDelivery], *, redeliver: bool = True
                              ) -> list[Scheduled]: ...


class ReplayRunner:
    """Runs one replay job at a time for a publisher."""

    def __init__(self, store: ReplayStore, kafka: KafkaSettings, claim: timedelta, catch_up_grace: timedelta,
                 slice_seconds: float = SLICE_SECONDS) -> None:
        self._store = store
        self._kafka = kafka
        self._claim = claim
        self._grace = catch_up_grace
        self._slice = slice_seconds

    async def run_jobs(self, stop: asyncio.Event, poll_seconds: float = 1.0) -> None:
        """Claim and run jobs until asked to stop."""
        while not stop.is_set():
            try:
                job = await self._store.claim_replay_job(self._claim)
            except StoreError as exc:
                log.warning("cannot look for replay jobs: %s", exc)
                job = None
            if job is None:
                await asyncio.sleep(poll_seconds)
                continue
            await self.run(job)

    async def run(self, job: ReplayJob) -> str:
        """Run ``job`` to its end; returns its final state (done, failed or cancelled)."""
        log.info("replay job %d for integration %d started", job.id, job.integration_id,
                 extra=ids(integration=job.integration_id, job=job.id))
        state, error = "cancelled", None
        try:
            if not job.cancel_requested:  # a cancel asked for before it ran: nothing is read
                state = await self._replay(job, await self._store.integration(job.integration_id))
        except (KafkaError, PublisherError, StoreError) as exc:
            state, error = "failed", f"replay from {self._kafka.topic} failed: {exc}"
            log.error("replay job %d: %s", job.id, error)
        except Exception as exc:  # one organization's job must never end the loop serving all
            state, error = "failed", f"replay from {self._kafka.topic} failed: {type(exc).__name__}: {exc}"
            log.exception("replay job %d: %s", job.id, error)
        if state == YIELDED:  # its turn is over and another job waits: it goes on later, where it stopped
            await self._yield(job.id)
            return state
        await self._finish(job.id, state, error)
        log.info("replay job %d %s", job.id, state, extra=ids(integration=job.integration_id, job=job.id))
        return state

    async def _yield(self, job_id: int) -> None:
        try:
            await self._store.yield_replay_job(job_id)
        except StoreError as exc:  # its claim expires by itself: it is only taken up a little later
            log.warning("cannot give replay job %d up yet: %s", job_id, exc)

    async def _finish(self, job_id: int, state: str, error: str | None) -> None:
        while True:
            try:
                return await self._store.finish_replay_job(job_id, state, error)
            except StoreError as exc:
                log.warning("cannot end replay job %d yet: %s", job_id, exc)
                await asyncio.sleep(1.0)

    async def _replay(self, job: ReplayJob, integration: Integration) -> str:
        consumer = AIOKafkaConsumer(bootstrap_servers=self._kafka.bootstrap_servers, enable_auto_commit=False,
                                    group_id=None, fetch_max_wait_ms=self._kafka.fetch_max_wait_ms)
        await consumer.start()
        try:
            progress = Progress(dict(job.progress), job.scanned, job.scheduled)
            ends = job.end_positions or await self._end_offsets(consumer)
            bounds = await self._seek(consumer, job, ends, progress)
            return await self._scan(consumer, job, integration, bounds, ends, progress)
        finally:
            await consumer.stop()

    async def _end_offsets(self, consumer: AIOKafkaConsumer) -> dict[int, int]:
        partitions = await partitions_of(consumer, self._kafka.topic)
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(partitions)).items()}

    async def _seek(self, consumer: AIOKafkaConsumer, job: ReplayJob, ends: dict[int, int],
                    progress: Progress) -> dict[int, Boundary]:
        """Position every partition (resuming from ``progress`` if the job ran before); the ones to scan."""
        stop_at = job.created_at + (self._grace if job.reason == "enabled" else timedelta())
        bounds = {p: Boundary(end, int(stop_at.timestamp() * 1000)) for p, end in ends.items()}
        partitions = [TopicPartition(self._kafka.topic, p) for p in sorted(ends)]
        consumer.assign(partitions)
        if job.end_positions is None:  # its first run: where it starts (a catch-up may know some partitions)
            missing = [tp for tp in partitions if tp.partition not in progress.positions]
            progress.positions.update(await self._first_positions(consumer, job, missing) if missing else {})
        for tp in partitions:
            if progress.positions.get(tp.partition) is None:
                bounds[tp.partition].done = True
            else:
                consumer.seek(tp, progress.positions[tp.partition])
        return bounds

    async def _first_positions(self, consumer: AIOKafkaConsumer, job: ReplayJob,
                               partitions: list[TopicPartition]) -> dict[int, int]:
        if job.start_offset is not None:
            return {tp.partition: job.start_offset for tp in partitions}
        assert job.since is not None
        found = await consumer.offsets_for_times({tp: int(job.since.timestamp() * 1000) for tp in partitions})
        return {tp.partition: offset for tp in partitions if (offset := start_offset(found.get(tp))) is not None}

    async def _scan(self, consumer: AIOKafkaConsumer, job: ReplayJob, integration: Integration,
                    bounds: dict[int, Boundary], ends: dict[int, int], progress: Progress) -> str:
        redeliver = job.reason == "requested"  # a catch-up only fills the gap: what was delivered stays so
        turn_ends = time.monotonic() + self._slice
        while not all(bound.done for bound in bounds.values()):
            active = [TopicPartition(self._kafka.topic, p) for p, bound in bounds.items() if not bound.done]
            batch = await consumer.getmany(*active, timeout_ms=500, max_records=1000)
            chosen = [d for tp, records in batch.items() for d in self._take(integration, tp, records, bounds,
                                                                             progress)]
            for tp in active:
                if not batch.get(tp):
                    bounds[tp.partition].quiet(await consumer.position(tp), consumer.highwater(tp))
            progress.scheduled += len(await self._schedule(chosen, redeliver))
            if await self._note(job, progress, ends):
                return "cancelled"
            # Only after a batch that brought records: near its end a job must see two quiet rounds in a row,
            # which a turn given up between them would start over.
            if batch and time.monotonic() > turn_ends and not all(b.done for b in bounds.values()) \
                    and await self._others_waiting(job.id):
                return YIELDED
        return "done"

    async def _others_waiting(self, job_id: int) -> bool:
        try:
            return await self._store.others_waiting(job_id)
        except StoreError:
            return False  # go on: yielding is only fairness

    def _take(self, integration: Integration, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]],
              bounds: dict[int, Boundary], progress: Progress) -> list[NewDelivery]:
        chosen = []
        for record in records:
            if bounds[tp.partition].past(record.offset, record.timestamp):
                break
            progress.positions[tp.partition] = record.offset + 1
            progress.scanned += 1
            try:
                event = parse_event(record.value, record.headers or ())
            except NotAnEvent:
                continue  # not a walhook event: live delivery dead-lettered it already
            if receives(integration, event):
                chosen.append(delivery_of(integration, event, record.value or b"", record.partition, record.offset))
        return chosen

    async def _schedule(self, chosen: list[NewDelivery], redeliver: bool) -> list[object]:
        while True:
            try:
                return list(await self._store.schedule_replay(chosen, redeliver=redeliver))
            except StoreError as exc:
                log.warning("cannot schedule replayed deliveries yet: %s", exc)
                await asyncio.sleep(1.0)

    async def _note(self, job: ReplayJob, progress: Progress, ends: dict[int, int]) -> bool:
        while True:
            try:
                return await self._store.note_replay_progress(
                    job.id, progress=progress.positions, scanned=progress.scanned, scheduled=progress.scheduled,
                    end_positions=ends, claim_for=self._claim)
            except StoreError as exc:
                log.warning("cannot note replay progress yet: %s", exc)
                await asyncio.sleep(1.0)


def job_summary(job: ReplayJob) -> str:
    """One line for a person: state, counts, where it started."""
    start = f"offset {job.start_offset}" if job.start_offset is not None else \
        f"{job.since:%Y-%m-%d %H:%M:%S} UTC" if isinstance(job.since, datetime) else "?"
    extra = f": {job.error}" if job.error else ""
    return (f"replay job {job.id} (integration {job.integration_id}, from {start}, {job.reason}): {job.state}, "
            f"{job.scanned} scanned, {job.scheduled} scheduled{extra}")
