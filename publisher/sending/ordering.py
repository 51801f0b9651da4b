"""Per-entity ordering: may this delivery go now, or must it wait?

The rule, for an integration with ``ordering = "entity"``: a delivery of an entity is attempted
only once every *earlier* delivery of that entity to that integration is settled. Earlier means
an earlier position in the entity's Kafka partition (its source offset; the delivery id breaks
ties and orders deliveries that have none), so a replayed old change sorts before a newer live
one whatever order they were recorded in.

A live delivery (just consumed, nothing of it in the store) goes now unless its entity *waits*:
the store holds a pending delivery of the entity for the integration, or this process is about to
write one (a failed attempt, a follower of it). Then it waits in the store behind them; otherwise
its lane runs the entity's deliveries one after another in the order they were consumed.

While an integration catches up after being enabled, its live deliveries wait in the store too,
and one beyond the position its catch-up replay has scanned stays there: the replay may still
add an earlier change of the entity. When the replay is done, the plain rule applies again.

``ordering = "none"`` opts out: every delivery may go at once, and a failure holds nothing back.

The store applies the rule when it claims waiting deliveries: ``EARLIER_PENDING`` and
``BEYOND_CATCH_UP`` are its SQL form, over a candidate delivery ``c`` of integration ``i``;
``WAITING_ENTITIES`` asks which of a batch's entities wait. Everything else here is pure.
"""

from __future__ import annotations

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

HELD = "timestamptz '9999-01-01 00:00:00+00'"
"""The next attempt time of a delivery parked *behind* an earlier change of its entity that is still in a
publisher's memory: never due on its own. That publisher releases it once the earlier change is settled.
If the publisher died, whoever reads the partition again reads the earlier change first, and the record
of this one after it: parking that record again takes the held delivery over, in order."""

WAITING_ENTITIES = (
    "SELECT DISTINCT w.integration_id, w.entity_path FROM unnest(%b::bigint[], %b::text[]) AS w(integration_id, "
    "entity_path) CROSS JOIN LATERAL (SELECT 1 FROM {s}.deliveries e WHERE e.integration_id = w.integration_id "
    "AND e.entity_path = w.entity_path AND e.status = 'pending' LIMIT 1) AS waiting")
"""Which of the given (integration, entity) pairs have a delivery waiting in the store. A probe per pair (the
lateral ``LIMIT 1`` keeps the planner from joining otherwise): statistics that have not seen a backlog yet made it
hash every pending delivery on each look."""


def lane_key(ordered: bool, entity_path: str, webhook_id: str) -> str:
    """The queue a delivery waits in inside its lane: one per entity when ordered, its own otherwise."""
    return entity_path if ordered else f"{entity_path}#{webhook_id}"


def must_wait(ordered: bool, catching_up: bool, entity_waits: bool) -> bool:
    """Whether a live delivery must wait in the store rather than go to its lane now."""
    return ordered and (catching_up or entity_waits)


def followers_wait(ordered: bool, head_settled: bool) -> bool:
    """After an attempt: must the entity's later deliveries go back to the store to wait for its retry?"""
    return ordered and not head_settled
