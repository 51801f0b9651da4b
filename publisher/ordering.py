"""Per-entity ordering: may this delivery go now, or must it wait?

The rule, for an integration with ``ordering = "entity"``: a delivery of an entity is attempted
only once every *earlier* delivery of that entity to that integration is settled. Earlier means
an earlier position in the entity's Kafka partition (its source offset; the delivery id breaks
ties and orders deliveries that have none), so a replayed old change sorts before a newer live
one whatever order they were recorded in. Settled means the store no longer holds it pending,
or this process delivered it a moment ago (the store may not have that outcome yet), or it waits
ahead in the same lane queue (the lane runs one entity's deliveries one after another).

While an integration catches up after being enabled, a delivery beyond the position its
catch-up replay has scanned waits as well: the replay may still add an earlier change of the
entity. When the replay is done, the plain rule applies again.

``ordering = "none"`` opts out: every delivery may go at once, and a failure holds nothing back.

The store applies the rule when it records and claims deliveries: ``EARLIER_PENDING`` and
``BEYOND_CATCH_UP`` are its SQL form, over a candidate delivery ``c`` of integration ``i``.
Everything else here is pure, told the time by its callers.
"""

from __future__ import annotations

from collections.abc import Collection, Container

# Position of a delivery within its entity, in SQL: a row comparison over source offset and id.
_POSITION = "(coalesce({t}.source_offset, -1), {t}.id)"

EARLIER_PENDING = (
    "EXISTS (SELECT 1 FROM {s}.deliveries e WHERE e.integration_id = c.integration_id "
    "AND e.entity_path = c.entity_path AND e.status = 'pending' AND "
    + _POSITION.format(t="e") + " < " + _POSITION.format(t="c") + ")")
"""True when an earlier delivery of the candidate's entity is still pending."""

BEYOND_CATCH_UP = (
    "EXISTS (SELECT 1 FROM {s}.replay_jobs j WHERE j.id = i.catching_up_job AND j.state = 'running' "
    "AND coalesce(c.source_offset, -1) >= coalesce((j.progress ->> c.source_partition::text)::bigint, 0))")
"""True when the candidate lies beyond what its integration's catch-up replay has scanned."""

EARLIER_PENDING_IDS = (
    "ARRAY(SELECT e.id FROM {s}.deliveries e WHERE e.integration_id = new.integration_id "
    "AND e.entity_path = new.entity_path AND e.status = 'pending' AND "
    + _POSITION.format(t="e") + " < " + _POSITION.format(t="new") + ")")
"""The earlier pending deliveries of a just-recorded delivery ``new``: it may only go after them."""


def lane_key(ordered: bool, entity_path: str, delivery_id: int) -> str:
    """The queue a delivery waits in inside its lane: one per entity when ordered, its own otherwise."""
    return entity_path if ordered else f"{entity_path}#{delivery_id}"


def may_go_now(ordered: bool, catching_up: bool, earlier_pending: Collection[int],
               settled_here: Container[int], queued_ahead: Container[int]) -> bool:
    """Whether a just-recorded delivery may be attempted now rather than wait in the store.

    ``earlier_pending`` is what the store held pending before it; ``settled_here`` what this
    process delivered lately; ``queued_ahead`` what its lane queues ahead of it for the entity.
    """
    if not ordered:
        return True
    if catching_up:
        return False
    return all(i in settled_here or i in queued_ahead for i in earlier_pending)


def followers_wait(ordered: bool, head_settled: bool) -> bool:
    """After an attempt: must the entity's later deliveries go back to the store to wait for its retry?"""
    return ordered and not head_settled


class RecentlyDelivered:
    """Deliveries this process delivered in the last ``seconds``, give or take; told the time.

    Their outcome may still wait in the recorder, so the store lists them as pending: they must
    not send a later change of their entity the slow way. Forgetting is safe: it only costs that
    detour. Two generations, swapped every ``seconds``: O(1) per delivery.
    """

    def __init__(self, seconds: float, now: float) -> None:
        self._seconds = seconds
        self._current: set[int] = set()
        self._previous: set[int] = set()
        self._since = now

    def add(self, delivery_id: int, now: float) -> None:
        if now - self._since > self._seconds:
            self._previous, self._current, self._since = self._current, set(), now
        self._current.add(delivery_id)

    def __contains__(self, delivery_id: object) -> bool:
        return delivery_id in self._current or delivery_id in self._previous
