"""The dispatcher: runs attempts in per-integration lanes and records what happened.

Every attempt is logged (the "webhook jobs" log) and moves its delivery on: delivered,
pending with the next attempt time, or failed. Writes are batched by a recorder that
flushes every few milliseconds, so no attempt costs its own database round trip.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from datetime import datetime, timedelta

import orjson

from publisher.lanes import Lane
from publisher.retry import Decision, RetryPolicy, Verdict
from publisher.sender import AttemptResult, WebhookSender
from publisher.store import AttemptRecord, Delivery, Integration, Store, utcnow

log = logging.getLogger("walhook.publisher")

DISABLE_MEMORY_SECONDS = 30.0
DELIVERED_MEMORY_SECONDS = 30.0

_SEVERITY = [Verdict.DELIVERED, Verdict.RETRY, Verdict.FAILED, Verdict.GONE]

_STATUS = {Verdict.DELIVERED: "succeeded", Verdict.RETRY: "pending", Verdict.FAILED: "failed",
           Verdict.GONE: "failed"}


class Recorder:
    """Collects attempt records and claim releases; writes them in batches."""

    def __init__(self, store: Store, interval: float = 0.02) -> None:
        self._store = store
        self._interval = interval
        self._records: list[AttemptRecord] = []
        self._releases: list[int] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def add(self, record: AttemptRecord) -> None:
        self._records.append(record)

    def release(self, deliveries: list[Delivery]) -> None:
        self._releases.extend(delivery.id for delivery in deliveries)

    async def flush(self) -> None:
        records, self._records = self._records, []
        releases, self._releases = self._releases, []
        try:
            await self._store.record_attempts(records)
            await self._store.release(releases)
        except Exception:
            # Keep them for the next flush; a crash meanwhile only means the deliveries are retried.
            self._records[:0], self._releases[:0] = records, releases
            raise

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception as exc:  # the store may be down for a while: keep trying
                log.warning("cannot record attempts yet: %s", exc)


class Dispatcher:
    def __init__(self, store: Store, sender: WebhookSender, policy: RetryPolicy, *, concurrency: int = 8,
                 lane_capacity: int = 1000, disable_after: timedelta = timedelta(days=5)) -> None:
        self.store = store
        self.sender = sender
        self.policy = policy
        self.recorder = Recorder(store)
        self.delivered = 0
        self._concurrency = concurrency
        self._capacity = lane_capacity
        self._disable_after = disable_after
        self._lanes: dict[int, Lane] = {}
        self._integrations: dict[int, Integration] = {}
        self._health_noted: dict[int, float] = {}
        # Integrations disabled here, and when: a cached copy may not know yet. After a while the
        # caches have caught up, and the store's word counts again (an operator may re-enable it).
        self._disabled: dict[int, float] = {}
        self._delivered_here = DeliveredMemory(DELIVERED_MEMORY_SECONDS)

    def start(self) -> None:
        self.recorder.start()

    @property
    def backlog(self) -> int:
        return sum(lane.size for lane in self._lanes.values())

    async def room(self, max_wait: float = 2.0) -> None:
        """Wait (at most ``max_wait`` seconds) while a lane that drains quickly is over half full.

        Called before taking more events in: deliveries a full lane cannot take go the slow way,
        through the store and the poller, so it pays to wait a moment for a lane that is about to have
        room. A lane that drains slowly or not at all is not waited for: one hanging endpoint never
        holds up the others.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while (left := deadline - loop.time()) > 0 and any(lane.backed_up(left) for lane in self._lanes.values()):
            await asyncio.sleep(0.005)

    def submit(self, delivery: Delivery, integration: Integration) -> bool:
        """Hand a claimed delivery to its integration's lane; False (and released) when it must wait."""
        disabled_at = self._disabled.get(integration.id)
        if disabled_at is not None and time.monotonic() - disabled_at < DISABLE_MEMORY_SECONDS:
            integration = replace(integration, enabled=False)
        self._integrations[integration.id] = integration
        lane = self._lane(integration)
        # Behind deliveries this lane does not hold (retries waiting in the store): wait for the poller.
        # Those this process just delivered are not waited for: the store may not have their outcome yet.
        waiting = self._delivered_here.not_delivered(delivery.pending_before) if delivery.pending_before else ()
        ordered_elsewhere = (integration.ordering == "entity" and bool(waiting)
                             and not lane.holds_all(delivery.entity_path, waiting))
        if ordered_elsewhere or not integration.enabled or not lane.offer(delivery):
            self.recorder.release([delivery])
            return False
        return True

    async def close(self) -> None:
        held = [d for lane in self._lanes.values() for d in await lane.close()]
        self.recorder.release(held)
        await self.recorder.close()

    def _lane(self, integration: Integration) -> Lane:
        lane = self._lanes.get(integration.id)
        if lane is None:
            lane = self._lanes[integration.id] = Lane(
                lambda deliveries: self._attempt(deliveries, integration.id), self.recorder.release,
                self._concurrency, self._capacity, integration.ordering == "entity", integration.rate_limit,
                integration.batch_size)
        return lane

    async def _attempt(self, deliveries: list[Delivery], integration_id: int) -> bool:
        """One request for one delivery, or for a batch; True when the entities' next deliveries may go."""
        integration = self._integrations[integration_id]
        msg_id, body = (deliveries[0].webhook_id, deliveries[0].body) if integration.batch_size == 1 \
            else batch_message(deliveries)
        started = utcnow()
        result = await self.sender.attempt(integration.url, integration.secrets, msg_id, body, integration.headers)
        verdicts = [self._settle(delivery, integration, started, result) for delivery in deliveries]
        worst = max(verdicts, key=_SEVERITY.index)
        if worst is not Verdict.DELIVERED:
            log.warning("attempt of %s to integration %d failed: %s; %s", msg_id, integration.id,
                        result.describe(), worst.value)
        await self._note_health(integration, worst)
        return worst is Verdict.DELIVERED or integration.ordering == "none"

    def _settle(self, delivery: Delivery, integration: Integration, started: datetime,
                result: AttemptResult) -> Verdict:
        """Decide one delivery's fate from the attempt's result and queue the record of it."""
        number = delivery.attempts + 1
        decision = self.policy.decide(number, result.status, result.headers.get("retry-after"), started)
        if delivery.trigger == "manual" and decision.verdict is Verdict.RETRY:
            decision = Decision(Verdict.FAILED)  # a person asked for one more attempt, not a new schedule
        self.recorder.add(_record(delivery, integration, number, started, result, decision.verdict,
                                  started + timedelta(seconds=decision.delay)))
        if decision.verdict is Verdict.DELIVERED:
            self.delivered += 1
            self._delivered_here.add(delivery.id)
        return decision.verdict

    async def _note_health(self, integration: Integration, verdict: Verdict) -> None:
        if verdict is Verdict.GONE:
            reason = f"the receiver answered 410 Gone at {utcnow():%Y-%m-%d %H:%M:%S} UTC"
            await self._disable(integration, reason)
            return
        succeeded = verdict is Verdict.DELIVERED
        last = self._health_noted.get(integration.id)
        # A success after failures, or at most one failure note per 5 s per integration.
        if (succeeded and last is None) or (not succeeded and last is not None and time.monotonic() - last < 5):
            return
        self._health_noted.pop(integration.id, None)
        if not succeeded:
            self._health_noted[integration.id] = time.monotonic()
        try:
            if await self.store.note_health(integration.id, succeeded, self._disable_after):
                log.error("integration %d disabled: failing continuously for %s", integration.id,
                          self._disable_after)
                await self._disable(integration, None)
        except Exception as exc:
            log.warning("cannot note the health of integration %d: %s", integration.id, exc)

    async def _disable(self, integration: Integration, reason: str | None) -> None:
        if reason is not None:
            await self.store.set_enabled(integration.id, False, reason)
            log.error("integration %d (%s) disabled: %s", integration.id, integration.url, reason)
        self._disabled[integration.id] = time.monotonic()
        self._integrations[integration.id] = replace(integration, enabled=False)
        lane = self._lanes.get(integration.id)
        if lane is not None:
            self.recorder.release(lane.drain())


class DeliveredMemory:
    """Deliveries this process delivered in the last ``seconds``, give or take.

    A batch recorded while their outcome waits in the recorder lists them as still pending; they
    must not send a later change of their entity to the store's slow path. Forgetting is safe: it
    only costs that detour. Two generations, swapped every ``seconds``: O(1) per delivery.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._current: set[int] = set()
        self._previous: set[int] = set()
        self._since = time.monotonic()

    def add(self, delivery_id: int) -> None:
        if time.monotonic() - self._since > self._seconds:
            self._previous, self._current, self._since = self._current, set(), time.monotonic()
        self._current.add(delivery_id)

    def not_delivered(self, delivery_ids: tuple[int, ...]) -> tuple[int, ...]:
        """The ids not delivered here."""
        return tuple(i for i in delivery_ids if i not in self._current and i not in self._previous)


def batch_message(deliveries: list[Delivery]) -> tuple[str, bytes]:
    """A batch request: its webhook-id and its body, the events' exact bytes with their sequence.

    ``{"batchId": ..., "sequence": {"count": n}, "events": [{"webhookId": ..., "sequence": {"index": i,
    "count": n}, "event": {...}}, ...]}`` - each event keeps its own webhook-id for deduplication.
    """
    count = len(deliveries)
    batch_id = f"batch_{deliveries[0].webhook_id}_{count}"
    items = b",".join(b'{"webhookId":' + orjson.dumps(d.webhook_id) + b',"sequence":{"index":%d,"count":%d},'
                      b'"event":' % (index, count) + d.body + b"}" for index, d in enumerate(deliveries, start=1))
    body = b'{"batchId":' + orjson.dumps(batch_id) + b',"sequence":{"count":%d},"events":[' % count + items + b"]}"
    return batch_id, body


def _record(delivery: Delivery, integration: Integration, number: int, started: datetime, result: AttemptResult,
            verdict: Verdict, next_attempt_at: datetime) -> AttemptRecord:
    return AttemptRecord(
        delivery_id=delivery.id, integration_id=integration.id, number=number, trigger=delivery.trigger,
        started_at=started, url=integration.url, request_headers=result.request_headers,
        response_status=result.status, response_headers=result.headers or None,
        response_body=result.response_body or None, duration_ms=result.duration * 1000, error=result.error,
        status=_STATUS[verdict], next_attempt_at=next_attempt_at if verdict is Verdict.RETRY else None)
