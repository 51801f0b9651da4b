"""The dispatcher: runs attempts in per-integration lanes and records what happened.

Live deliveries (just consumed) go from memory straight to their lanes unless their entity must
wait (``publisher.sending.ordering``); nothing of them is written before their first attempt. Deliveries
that waited in the store come from the retry poller, claimed. Every attempt is logged (the
"webhook jobs" log) and moves its delivery on: delivered, pending with the next attempt time, or
failed. The recorder (``publisher.settling.recorder``) writes all of it in batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Protocol

import orjson

from models.errors import StoreError
from models.logs import ids
from publisher.routing.directory import IntegrationDirectory
from publisher.routing.recipients import event_id_of
from publisher.sending.headers import capped_response_headers, hiding_custom_values
from publisher.sending.lanes import Lane, Spawn, _spawn_task
from publisher.sending.ordering import must_wait
from publisher.sending.retry import Decision, RetryPolicy, Verdict
from publisher.sending.sender import AttemptResult, WebhookSender
from publisher.settling.recorder import Recorder, RecorderStore
from publisher.store import AttemptRecord, Delivery, Integration, NewDelivery, utcnow

log = logging.getLogger("walhook.publisher")

_SEVERITY = [Verdict.DELIVERED, Verdict.RETRY, Verdict.FAILED, Verdict.GONE]

_STATUS = {Verdict.DELIVERED: "succeeded", Verdict.RETRY: "pending", Verdict.FAILED: "failed",
           Verdict.GONE: "pending"}  # the integration is disabled: the delivery waits for it to be enabled again


STALLED_SECONDS = 1.0
"""A lane whose every worker has waited this long on its endpoint with no attempt finishing takes no live
delivery: it goes to wait in the store at once (``Lane.stalled``), so a hanging endpoint does not hold its
records' offsets in memory until the lane fills."""
SLOW_SECONDS = 5.0
"""A lane whose queue would take longer than this to drain (at its current pace) is slow: when the consumer
nears its cap of unsettled records, its queued live deliveries wait in the store instead (``spill_slow``)."""


class DispatchStore(RecorderStore, Protocol):
    """What the dispatcher needs of the store: its recorder's writes, claims, health and ordering's lookups."""

    async def extend_claims(self, delivery_ids: Sequence[int], claim_for: timedelta) -> None: ...

    async def note_disabled_positions(self, integration_id: int, positions: dict[int, int] | None) -> None: ...

    async def note_health(self, integration_id: int, succeeded: bool, disable_after: timedelta) -> bool: ...

    async def waiting_entities(self, pairs: Sequence[tuple[int, str]]) -> set[tuple[int, str]]: ...


class Dispatcher:
    """Runs attempts in per-integration lanes, built from and kept in step with the directory."""

    def __init__(self, store: DispatchStore, sender: WebhookSender, policy: RetryPolicy,
                 directory: IntegrationDirectory, *, spawn: Spawn = _spawn_task, concurrency: int = 8,
                 lane_capacity: int = 1000, disable_after: timedelta = timedelta(days=5),
                 claim: timedelta = timedelta(seconds=60),
                 positions: Callable[[], Awaitable[dict[int, int] | None]] | None = None) -> None:
        self.store = store
        self.sender = sender
        self.policy = policy
        self.directory = directory
        self.recorder = Recorder(store, claim=claim)
        self.delivered = 0
        self._spawn = spawn
        self._positions = positions  # where the consumers stand, taken before this process stops recording
        self._concurrency = concurrency
        self.capacity = lane_capacity
        self._disable_after = disable_after
        self._lanes: dict[int, Lane] = {}
        self._retired: list[Lane] = []  # rebuilt lanes still finishing their requests in flight
        self._failure_noted: dict[int, float] = {}
        directory.listen(self._changed)

    @property
    def backlog(self) -> int:
        return sum(lane.size for lane in self._lanes.values())

    def held_ids(self) -> list[int]:
        """Every delivery from the store this process holds: in a lane (retired lanes finishing their requests
        included), or parked behind an entity still in a lane."""
        return [*(i for lane in (*self._lanes.values(), *self._retired) for i in lane.held_ids()),
                *self.recorder.held_ids()]

    async def renew_claims(self, claim: timedelta) -> None:
        """Keep what the lanes hold claimed, every third of the claim, until cancelled.

        A delivery waiting in a slow lane (a rate limit, a slow receiver) would otherwise see its
        claim expire, and the poller - here or in another publisher - would hand it out again.
        """
        while True:
            await asyncio.sleep(claim.total_seconds() / 3)
            self._retired = [lane for lane in self._retired if lane.size]
            try:
                await self.store.extend_claims(self.held_ids(), claim)
            except StoreError as exc:
                log.warning("cannot renew claims: %s", exc)

    def lane_depths(self) -> dict[int, int]:
        """Deliveries waiting in each integration's lane in this process."""
        return {integration_id: lane.size for integration_id, lane in self._lanes.items()}

    def lane_room(self) -> dict[int, int]:
        """How many more deliveries each integration's lane here takes now (the poller claims no more)."""
        return {integration_id: max(0, self.capacity - lane.size) for integration_id, lane in self._lanes.items()}

    async def room(self, max_wait: float = 2.0) -> None:
        """Wait (at most ``max_wait`` seconds) while a lane that drains quickly is over half full.

        Called before each routing turn: deliveries a full lane cannot take go the slow way,
        through the store and the poller, so it pays to wait a moment for a lane that is about to have
        room. A lane that drains slowly or not at all is not waited for: one hanging endpoint never
        holds up the others.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while (left := deadline - loop.time()) > 0 and any(lane.backed_up(left) for lane in self._lanes.values()):
            await asyncio.sleep(0.005)

    def spill_slow(self, within: float = SLOW_SECONDS) -> None:
        """Live deliveries queued in lanes that cannot empty within ``within`` seconds go to wait in the store,
        where they are settled. Called when the consumer nears its cap of unsettled records: a few hanging
        endpoints holding their lanes' records must not stop the intake of every organization's live events.
        Requests in flight stay; the store gives the deliveries back in order, as the lanes take them.
        """
        for lane in [lane for lane in self._lanes.values() if lane.slow(within)]:
            self._give_back(lane, lane.drain(lambda delivery: delivery.live is not None))

    async def take_live(self, deliveries: list[NewDelivery]) -> None:
        """A routing turn's deliveries: each to its lane now, or to the store when it must wait.

        One look at the store for the turn: which of its entities have a delivery waiting there.
        """
        asked = {(d.integration_id, d.entity_path) for d in deliveries if self._ordered(d.integration_id)}
        async with self.recorder.reading():
            waiting = await self.store.waiting_entities(list(asked))
            for new in deliveries:
                self._take(new, waiting)

    def _take(self, new: NewDelivery, waiting: Collection[tuple[int, str]]) -> None:
        integration = self.directory.get(new.integration_id)
        if integration is None or not integration.enabled:
            self.recorder.park(new)  # it waits for the integration to be enabled again
            return
        key = (integration.id, new.entity_path)
        lane = self._lane(integration)
        retiring = lane.ordered and any(old.config.id == integration.id and old.has(new.entity_path)
                                        for old in self._retired)
        if retiring or must_wait(lane.ordered, integration.catching_up,
                                 key in waiting or self.recorder.waits_here(key)) \
                or lane.stalled(STALLED_SECONDS) or not lane.offer(Delivery.of_live(new)):
            self.recorder.park(new, behind=self._in_memory(lane, integration.id, new.entity_path))

    def _in_memory(self, lane: Lane, integration_id: int, entity_path: str) -> bool:
        """Whether an earlier change of the entity is still in this ordered lane, or in a lane of the integration
        rebuilt under a new config: a change parked now is held behind it (the store does not know of it)."""
        return lane.ordered and any(other.has(entity_path) for other in (lane, *self._retired)
                                    if other is lane or other.config.id == integration_id)

    def _ordered(self, integration_id: int) -> bool:
        integration = self.directory.get(integration_id)
        return integration is not None and integration.ordering == "entity"

    def submit(self, delivery: Delivery) -> bool:
        """Hand a delivery claimed from the store to its integration's lane; False (and released) when it must
        wait: the store applied the ordering rule when it claimed it."""
        integration = self.directory.get(delivery.integration_id)
        if integration is None or not integration.enabled or not self._lane(integration).offer(delivery):
            self.recorder.release([delivery.id])
            return False
        return True

    def _give_back(self, lane: Lane, deliveries: list[Delivery]) -> None:
        """Deliveries a lane will not attempt (a retry holds their entity back, or the lane was retired):
        claimed ones are released, live ones wait in the store (behind their entity if it is still here)."""
        self.recorder.release([d.id for d in deliveries if d.live is None])
        for delivery in deliveries:
            if delivery.live is not None:
                self.recorder.park(delivery.live,
                                   behind=self._in_memory(lane, delivery.integration_id, delivery.entity_path))

    async def let_go(self, partitions: set[int], within: float) -> None:
        """The partitions go to another publisher: their live deliveries still queued here wait in the store
        (so whoever reads their records again finds them there, in order), and the ones in flight are waited
        for (``within`` seconds at most)."""
        def chosen(delivery: Delivery) -> bool:
            return delivery.live is not None and delivery.live.source_partition in partitions
        lanes = [*self._lanes.values(), *self._retired]
        for lane in lanes:
            self._give_back(lane, lane.drain(chosen))
        deadline = time.monotonic() + within
        while any(lane.holds(chosen) for lane in lanes) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self.recorder.close(max(0.1, deadline - time.monotonic()))

    async def close(self, within: float = 5.0) -> None:
        """Stop every lane and record what is known, within ``within`` seconds even if the store is down."""
        held = [d for lane in self._lanes.values() for d in await lane.close()]
        self._lanes.clear()
        self.recorder.release([d.id for d in held if d.live is None])  # live ones are read again by the next owner
        await self.recorder.close(within)

    def _lane(self, integration: Integration) -> Lane:
        lane = self._lanes.get(integration.id)

        def give_back(deliveries: list[Delivery]) -> None:
            assert lane is not None  # called by the lane, once it exists
            self._give_back(lane, deliveries)
        if lane is None:
            lane = self._lanes[integration.id] = Lane(
                self._attempt, give_back, self._concurrency_of(integration),
                self.capacity, integration.ordering == "entity", integration.rate_limit, integration.batch_size,
                config=integration, spawn=self._spawn, name=f"integration {integration.id}",
                idle=lambda path: self.recorder.free((integration.id, path)))
        return lane

    def _concurrency_of(self, integration: Integration) -> int:
        return integration.concurrency or self._concurrency

    def _changed(self, before: Integration | None, after: Integration | None) -> None:
        """Keep the integration's lane in step with its config: updated in place, or retired and rebuilt."""
        lane = self._lanes.get((after or before).id)  # type: ignore[union-attr]
        if lane is None:
            return
        rebuild = after is None or not after.enabled or lane.ordered != (after.ordering == "entity") \
            or lane.concurrency != self._concurrency_of(after)
        if rebuild:
            # Its waiting deliveries go back to the store (still pending) and return through the poller, in order;
            # requests in flight finish under the config they were sent with.
            del self._lanes[lane.config.id]
            self._give_back(lane, lane.retire())
            self._retired.append(lane)
        elif after is not None:
            lane.update(after, after.rate_limit, after.batch_size)

    async def _attempt(self, deliveries: list[Delivery], integration: Integration) -> bool:
        """One request for one delivery, or a batch, under the config the lane took them with.

        True when the entities' next deliveries may go.
        """
        msg_id, body = (deliveries[0].webhook_id, deliveries[0].body) if len(deliveries) == 1 \
            and integration.batch_size == 1 else batch_message(deliveries)
        started = utcnow()
        result = await self.sender.attempt(integration.url, integration.secrets, msg_id, body, integration.headers,
                                           integration.organization_id)
        verdicts = [self._settle(delivery, integration, started, result) for delivery in deliveries]
        worst = max(verdicts, key=_SEVERITY.index)
        if worst is not Verdict.DELIVERED:
            log.warning("attempt of %s to integration %d failed: %s; %s", msg_id, integration.id,
                        result.describe(), worst.value, extra=_attempt_ids(deliveries, integration, msg_id))
        await self._note_health(integration, worst)
        return worst is Verdict.DELIVERED

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
        return decision.verdict

    async def _where_consumers_stand(self) -> dict[int, int] | None:
        return await self._positions() if self._positions is not None else None

    async def _note_health(self, integration: Integration, verdict: Verdict) -> None:
        """Tell the store about failure streaks (at most once per 5 s per integration) and their end."""
        try:
            if verdict is Verdict.GONE:
                reason = f"the receiver answered 410 Gone at {utcnow():%Y-%m-%d %H:%M:%S} UTC"
                log.error("integration %d (%s) disabled: %s", integration.id, integration.url, reason,
                          extra=ids(integration.organization_id, integration.id))
                await self.directory.disable(integration, reason, await self._where_consumers_stand())
            elif verdict is Verdict.DELIVERED:
                # The end of a streak brings the integration's waiting retries forward (see the store).
                if self._failure_noted.pop(integration.id, None) is not None or integration.failing_since:
                    await self.store.note_health(integration.id, True, self._disable_after)
            elif time.monotonic() - self._failure_noted.get(integration.id, -10.0) >= 5:
                self._failure_noted[integration.id] = time.monotonic()
                if await self.store.note_health(integration.id, False, self._disable_after):
                    log.error("integration %d disabled: failing continuously for %s", integration.id,
                              self._disable_after, extra=ids(integration.organization_id, integration.id))
                    await self.store.note_disabled_positions(integration.id, await self._where_consumers_stand())
                    await self.directory.disable(integration, None)
        except StoreError as exc:  # health is bookkeeping: never let it stop the lane
            log.warning("cannot note the health of integration %d: %s", integration.id, exc)


def _attempt_ids(deliveries: list[Delivery], integration: Integration, msg_id: str) -> dict[str, object]:
    """The ids of an attempt's log line: its delivery (the webhook-id) and event, or a batch's deliveries."""
    if len(deliveries) == 1 and deliveries[0].webhook_id == msg_id:
        return ids(integration.organization_id, integration.id, msg_id, event_id_of(msg_id, integration.id))
    return ids(integration.organization_id, integration.id, batch=msg_id,
               deliveries=[delivery.webhook_id for delivery in deliveries])


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
        started_at=started, url=integration.url, request_headers=hiding_custom_values(result.request_headers),
        response_status=result.status, response_headers=capped_response_headers(result.headers),
        response_body=result.response_body or None, duration_ms=result.duration * 1000, error=result.error,
        status=_STATUS[verdict], next_attempt_at=next_attempt_at if verdict in (Verdict.RETRY, Verdict.GONE) else None,
        live=delivery.live)
