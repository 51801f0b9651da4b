"""Per-integration lanes: where deliveries wait in memory for their attempt.

Each integration gets its own lane with its own concurrency limit, so an endpoint that
hangs only ever occupies its own lane's workers - never another integration's. Inside a
lane, deliveries of one entity run strictly one after another in arrival order (unless the
integration opted out of ordering); different entities run in parallel.

A lane holds at most ``capacity`` deliveries. Whatever it cannot take waits in the store,
pending, and comes back through the poller: memory is bounded, nothing is dropped.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from publisher.sending.ordering import followers_wait, lane_key
from publisher.store import Delivery

# The lane's attempt function sends one request carrying the given deliveries (one, or a batch), with
# the config the lane took them under, and returns True when their entities may continue with their
# next deliveries.
Attempt = Callable[[list[Delivery], Any], Awaitable[bool]]
Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]


def _spawn_task(coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(coroutine, name=name)


@dataclass
class TokenBucket:
    """``rate`` requests per second with bursts of ``burst``; pure: callers pass the time."""

    rate: float
    burst: float = 1.0
    _tokens: float = field(default=-1.0, init=False)
    _stamp: float = field(default=0.0, init=False)

    def wait_time(self, now: float) -> float:
        """Seconds to wait before the next request may go; takes the token when it returns 0."""
        if self._tokens < 0:
            self._tokens, self._stamp = self.burst, now
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


@dataclass
class DrainRate:
    """Deliveries done per second over the last ``window`` seconds or so; pure: callers pass the time."""

    window: float = 1.0
    _count: int = field(default=0, init=False)
    _start: float = field(default=0.0, init=False)
    _rate: float = field(default=0.0, init=False)
    _last: float = field(default=float("-inf"), init=False)

    def note(self, now: float, done: int) -> None:
        if now - self._start >= self.window:
            self._rate = self._count / (now - self._start) if self._count else 0.0
            self._count, self._start = 0, now
        self._count += done
        self._last = now

    def rate(self, now: float) -> float:
        return self._rate if now - self._last < self.window else 0.0  # nothing done lately: not draining


class Lane:
    """The deliveries of one integration, worked by ``concurrency`` tasks.

    ``config`` (the integration, for the dispatcher) travels with every batch the lane takes: a
    request is sent with exactly the config its batch was taken under, even if ``update`` changes
    it meanwhile. Ordering and concurrency are fixed for a lane's life; to change them, the owner
    drains the lane and builds a new one.
    """

    def __init__(self, attempt: Attempt, release: Callable[[list[Delivery]], None], concurrency: int,
                 capacity: int, ordered: bool, rate_limit: float | None = None, batch_size: int = 1, *,
                 config: Any = None, spawn: Spawn = _spawn_task, name: str = "lane",
                 idle: Callable[[str], None] = lambda _: None) -> None:
        self._attempt = attempt
        self._release = release
        self._idle = idle  # told the lane key of an entity (ordered: its path) that has nothing left here
        self._capacity = capacity
        self._ordered = ordered
        self.concurrency = concurrency
        self.config = config
        self._batch_size = batch_size
        self._bucket = _bucket(rate_limit)
        self._queues: dict[str, deque[Delivery]] = {}
        self._ready: deque[str] = deque()  # entities with a delivery that may go now
        self._busy: dict[str, int] = {}  # entities with an attempt in flight -> deliveries in it (their queue's head)
        self._size = 0
        self._drain = DrainRate()
        self._in_flight = 0  # attempts under way
        self._saturated_since: float | None = None  # since when every worker has had an attempt under way
        self._wakeup = asyncio.Event()
        self._closed = False
        self._workers = [spawn(self._work(), f"{name} worker {n}") for n in range(concurrency)]

    @property
    def ordered(self) -> bool:
        return self._ordered

    def update(self, config: Any, rate_limit: float | None, batch_size: int) -> None:
        """New config for the batches taken from now on (in-flight requests keep theirs)."""
        self.config = config
        self._batch_size = batch_size
        if (self._bucket.rate if self._bucket else None) != rate_limit:
            self._bucket = _bucket(rate_limit)

    @property
    def size(self) -> int:
        return self._size

    def backed_up(self, within: float) -> bool:
        """Over half full, but draining fast enough to be back at half within ``within`` seconds.

        Whoever feeds the lane may wait for such a lane; one that drains slowly (or not at all,
        its endpoint hangs) is not worth waiting for: what it cannot take waits in the store.
        """
        excess = self._size - self._capacity // 2
        return excess > 0 and excess <= self._drain.rate(asyncio.get_running_loop().time()) * within

    def slow(self, within: float) -> bool:
        """Whether what waits here would take longer than ``within`` seconds at the pace the lane drains now
        (an endpoint that hangs: it does not drain at all)."""
        return self._size > self._drain.rate(asyncio.get_running_loop().time()) * within

    def stalled(self, seconds: float) -> bool:
        """Every worker has had an attempt under way for ``seconds`` with none finishing: the endpoint hangs (or
        is too slow to wait for). A live delivery for such a lane goes to wait in the store at once, where it is
        settled, rather than hold its record's offset in memory until the lane fills."""
        since = self._saturated_since
        return since is not None and asyncio.get_running_loop().time() - since >= seconds

    def held_ids(self) -> list[int]:
        """Every delivery from the store this lane holds, waiting or in flight (live ones have no id yet)."""
        return [delivery.id for queue in self._queues.values() for delivery in queue if delivery.live is None]

    def holds(self, chosen: Callable[[Delivery], bool]) -> bool:
        """Whether a chosen delivery waits or runs here."""
        return any(chosen(delivery) for queue in self._queues.values() for delivery in queue)

    def has(self, entity_path: str) -> bool:
        """Whether a delivery of this entity waits or runs here (ordered lanes queue by entity)."""
        return entity_path in self._queues

    def offer(self, delivery: Delivery) -> bool:
        """Queue ``delivery``; False when the lane is full (it then stays pending in the store)."""
        if self._size >= self._capacity:
            return False
        if self._closed:
            return False
        key = lane_key(self._ordered, delivery.entity_path, delivery.webhook_id)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._ready.append(key)
        queue.append(delivery)
        self._size += 1
        self._wakeup.set()
        return True

    def drain(self, chosen: Callable[[Delivery], bool] = lambda _: True) -> list[Delivery]:
        """Take back the chosen queued deliveries (never the ones in flight), e.g. every one when the
        integration is disabled, or a partition's when it went to another publisher."""
        taken: list[Delivery] = []
        for key in list(self._queues):
            queue, flying = self._queues[key], self._busy.get(key, 0)
            kept = [d for n, d in enumerate(queue) if n < flying or not chosen(d)]
            taken.extend(d for n, d in enumerate(queue) if n >= flying and chosen(d))
            if kept:
                self._queues[key] = deque(kept)
            else:
                del self._queues[key]
        self._ready = deque(key for key in self._ready if key in self._queues)
        self._size -= len(taken)
        for key in {lane_key(self._ordered, d.entity_path, d.webhook_id) for d in taken} - self._queues.keys():
            self._idle(key)  # nothing of the entity is left here
        return taken

    def retire(self) -> list[Delivery]:
        """Take no more: hand back what waits (requests in flight finish), workers end when idle."""
        self._closed = True
        self._wakeup.set()
        return self.drain()

    async def close(self) -> list[Delivery]:
        """Stop now; returns every delivery still held, in flight included (they stay pending in the store)."""
        self._closed = True
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        return [d for queue in self._queues.values() for d in queue]

    async def _work(self) -> None:
        while True:
            while not self._ready:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            config, taken = self.config, self._take()
            try:
                await self._throttle()
                self._started()
                try:
                    may_continue = await self._attempt([d for _, group in taken for d in group], config)
                finally:
                    self._finished()
            finally:
                for key, _ in taken:
                    self._busy.pop(key, None)
            for key, group in taken:
                self._after(key, len(group), may_continue)
            self._drain.note(asyncio.get_running_loop().time(), sum(len(group) for _, group in taken))

    def _started(self) -> None:
        self._in_flight += 1
        if self._in_flight >= self.concurrency:
            self._saturated_since = asyncio.get_running_loop().time()

    def _finished(self) -> None:
        self._in_flight -= 1
        self._saturated_since = None  # an attempt finished: the lane moves

    def _take(self) -> list[tuple[str, list[Delivery]]]:
        """Up to ``batch_size`` deliveries: entities' heads, and their followers in order."""
        taken: list[tuple[str, list[Delivery]]] = []
        room = self._batch_size
        while self._ready and room > 0:
            key = self._ready.popleft()
            group = list(itertools.islice(self._queues[key], room))
            self._busy[key] = len(group)
            taken.append((key, group))
            room -= len(group)
        return taken

    def _after(self, key: str, count: int, may_continue: bool) -> None:
        queue = self._queues.get(key)
        if queue is None:
            return
        for _ in range(count):
            queue.popleft()
        self._size -= count
        followers: list[Delivery] = []
        if followers_wait(self._ordered, may_continue):
            # The entity's head failed and waits for a retry: later changes of it must not overtake.
            # They wait in the store and come back, in order, after the retry.
            followers = list(queue)
            self._size -= len(queue)
            queue.clear()
        if queue:
            self._ready.append(key)
        else:
            del self._queues[key]
        if followers:
            self._release(followers)
        if not queue:
            self._idle(key)

    async def _throttle(self) -> None:
        """Wait for the rate limit; an update meanwhile (a new rate, or none) applies at once."""
        loop = asyncio.get_running_loop()
        while (bucket := self._bucket) is not None and (delay := bucket.wait_time(loop.time())) > 0:
            await asyncio.sleep(min(delay, 0.25))  # looks again soon: the rate may change meanwhile


def _bucket(rate_limit: float | None) -> TokenBucket | None:
    return TokenBucket(rate_limit, burst=max(1.0, rate_limit)) if rate_limit else None
