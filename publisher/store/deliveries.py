"""Deliveries (the webhook jobs) and their attempts: logged, parked, claimed, settled, scheduled again.

A live delivery reaches the store only after its first attempt (``log_first_attempts``: its row
with the attempt inside it, in one statement for a whole batch), or when it must wait (``park``). Waiting
deliveries are claimed, attempted and moved on (``claim_due``, ``record_attempts``). Every
statement of the hot path handles a batch, with binary array parameters; the ordering rule it
applies lives in ``publisher.sending.ordering``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from models.errors import NotFound
from publisher.sending.ordering import BEYOND_CATCH_UP, EARLIER_PENDING, HELD, WAITING_ENTITIES
from publisher.store.engine import as_json
from publisher.store.integrations import IntegrationStore
from publisher.store.rows import AttemptRecord, Delivery, NewDelivery, Scheduled

# The fields of a NewDelivery the store keeps, in _NEW_COLUMNS' order (its trace context lives in memory only).
_STORED = [name for name in NewDelivery.__dataclass_fields__ if name != "traceparent"]
_NEW_COLUMNS = ("integration_id, organization_id, event_id, webhook_id, entity_key, entity_path, operation, body, "
                "source_partition, source_offset")
_NEW_ARRAYS = ("%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bytea[], "
               "%b::int[], %b::bigint[]")
# Adds each integration's filtered events to its counter (publisher.routing.recipients: conditions held for none).
_COUNT_FILTERED = ("INSERT INTO {s}.filtered_events (integration_id, events) SELECT * FROM unnest(%b::bigint[], "
                   "%b::bigint[]) ON CONFLICT (integration_id) DO UPDATE SET "
                   "events = {s}.filtered_events.events + EXCLUDED.events, last_at = now()")
# A live delivery's row with its first attempt in it, for a whole batch: one row per event (migration 85). A
# delivery already known (consumed again after a crash or a rebalance and sent again, or parked by an earlier
# owner) keeps its row and takes the attempt as its next one, in the attempts log.
_ATTEMPT_COLUMNS = ("started_at, url, request_headers, response_status, response_headers, response_body, "
                    "duration_ms, error, outcome")
_FIRST_COLUMNS = ", ".join(f"first_{name}" for name in _ATTEMPT_COLUMNS.split(", "))
_LOG_FIRST = (
    "WITH n AS MATERIALIZED (SELECT *, nextval('{s}.attempts_id_seq') AS attempt_id FROM unnest("
    + _NEW_ARRAYS + ", %b::text[], %b::timestamptz[], %b::timestamptz[], %b::text[], %b::text[], %b::int[], "
    "%b::text[], %b::bytea[], %b::float8[], %b::text[], %b::text[]) AS n(" + _NEW_COLUMNS + ", status, "
    "next_attempt_at, " + _ATTEMPT_COLUMNS + ")), "
    "logged AS (INSERT INTO {s}.deliveries (" + _NEW_COLUMNS + ", status, attempts, next_attempt_at, last_error, "
    "first_attempt_id, " + _FIRST_COLUMNS + ") "
    "SELECT " + _NEW_COLUMNS + ", status, 1, coalesce(next_attempt_at, now()), error, attempt_id, started_at, url, "
    "request_headers::jsonb, response_status, response_headers::jsonb, response_body, duration_ms, error, outcome "
    "FROM n ON CONFLICT (integration_id, event_id) DO UPDATE SET status = EXCLUDED.status, "
    "attempts = {s}.deliveries.attempts + 1, next_attempt_at = EXCLUDED.next_attempt_at, "
    "last_error = EXCLUDED.last_error, claimed_until = NULL, updated_at = now() "
    "RETURNING id, integration_id, event_id, attempts, first_attempt_id) "
    "INSERT INTO {s}.attempts (id, delivery_id, integration_id, number, trigger, " + _ATTEMPT_COLUMNS + ") "
    "SELECT n.attempt_id, l.id, n.integration_id, l.attempts, 'scheduled', n.started_at, n.url, "
    "n.request_headers::jsonb, n.response_status, n.response_headers::jsonb, n.response_body, n.duration_ms, "
    "n.error, n.outcome FROM n JOIN logged l ON l.integration_id = n.integration_id AND l.event_id = n.event_id "
    "WHERE l.first_attempt_id IS DISTINCT FROM n.attempt_id")
CLAIM_PER_INTEGRATION = 200
"""The most deliveries one integration offers to one claim (``claim_due``): others' turn comes first."""

_READY = "d.id, d.integration_id, d.webhook_id, d.entity_path, d.body, d.attempts, d.created_at, d.trigger"
# The claim's plan must not hang on the statistics: a backlog builds in seconds, the statistics follow when
# autovacuum gets to them, and while they show next to no pending delivery every index over pending ones looks
# empty to the planner, so any of them seems as good as the right one. It checked each candidate's entity order
# by scanning every due delivery (a claim ran for minutes). So no lookup here has a wrong index to choose: the
# candidates' scan says ``< HELD``, the predicate of the index made for it (migration 86), which the order check
# (held deliveries count there) cannot use; and the recheck after the lock reads the locked row's own columns,
# where a condition on ``d.status`` would let the planner hash every pending delivery to join the claimed few.
CLAIM_DUE = (
    "WITH candidates AS (SELECT x.id, x.next_attempt_at, x.rank, i.organization_id "
    "FROM {s}.integrations i CROSS JOIN LATERAL (SELECT c.id, c.next_attempt_at, "
    "row_number() OVER (ORDER BY c.next_attempt_at, c.id) AS rank FROM {s}.deliveries c "
    "WHERE c.integration_id = i.id AND c.status = 'pending' AND c.next_attempt_at <= now() "
    f"AND c.next_attempt_at < {HELD} "
    "AND (c.claimed_until IS NULL OR c.claimed_until < now()) "
    f"AND (i.ordering = 'none' OR NOT ({EARLIER_PENDING} OR {BEYOND_CATCH_UP})) "
    "ORDER BY c.next_attempt_at, c.id LIMIT least(%b, coalesce((SELECT r.room FROM unnest(%b::bigint[], "
    "%b::int[]) AS r(id, room) WHERE r.id = i.id), %b))) x WHERE i.enabled), "
    "ranked AS (SELECT id, next_attempt_at, row_number() OVER (PARTITION BY organization_id "
    "ORDER BY rank, next_attempt_at, id) AS turn FROM candidates), "
    "due AS (SELECT d.id, d.status, d.claimed_until FROM {s}.deliveries d JOIN ranked r ON r.id = d.id "
    "ORDER BY r.turn, r.next_attempt_at, r.id LIMIT %b FOR UPDATE OF d SKIP LOCKED) "
    # Checked again on the row as locked: a claim committed since this statement's snapshot leaves the row
    # unlocked (SKIP LOCKED takes it), and the lock returns the row's newest version.
    "UPDATE {s}.deliveries d SET claimed_until = now() + %b FROM due WHERE d.id = due.id "
    "AND due.status = 'pending' AND (due.claimed_until IS NULL OR due.claimed_until < now()) "
    f"RETURNING {_READY}")
"""Claim due deliveries fairly (``DeliveryStore.claim_due``), with the parameters ``claim_parameters`` gives."""


def claim_parameters(limit: int, claim_for: timedelta, room: Mapping[int, int] | None = None,
                     per_integration: int = CLAIM_PER_INTEGRATION) -> list[object]:
    """``CLAIM_DUE``'s parameters for a claim of at most ``limit`` (see ``DeliveryStore.claim_due``)."""
    offer = min(per_integration, limit)
    return [offer, list(room or {}), list((room or {}).values()), offer, limit, claim_for]


# Statements that change many deliveries lock them first, in id order, so that two of them running
# at once (the attempt recorder, the claim keeper, a recovering integration's retries brought
# forward) wait for each other rather than deadlock, which an update in scan order can.
_LOCKED = "locked AS MATERIALIZED (SELECT id FROM {s}.deliveries WHERE id = ANY(%b::bigint[]) ORDER BY id " \
          "FOR NO KEY UPDATE)"
_LOCKED_PENDING = _LOCKED.replace("ORDER BY", "AND status = 'pending' ORDER BY")


def _columns(deliveries: Sequence[NewDelivery]) -> list[list[object]]:
    """The deliveries as column arrays, in the one order every statement inserts them in: by their
    event's place in its partition. Two statements recording the same events at once (the consumers
    and a catch-up job, at the seam of an enable) then meet in the same order and one waits for the
    other, where opposite orders deadlock. Within a partition that is the events' order, so an
    entity's deliveries still get their ids in the order its changes were made."""
    ordered = sorted(deliveries, key=_place)
    return [[getattr(d, name) for d in ordered] for name in _STORED]


def _place(delivery: NewDelivery) -> tuple[int, int, int, str]:
    return (-1 if delivery.source_partition is None else delivery.source_partition,
            -1 if delivery.source_offset is None else delivery.source_offset, delivery.integration_id,
            delivery.event_id)


def outcome_of(record: AttemptRecord) -> str:
    """The attempt log's partition: ``succeeded`` when the attempt settled its delivery so, else ``failed``
    (kept for ``[retention] failed_days``)."""
    return "succeeded" if record.status == "succeeded" else "failed"


class DeliveryStore(IntegrationStore):
    """The life of a delivery."""

    async def create_deliveries(self, deliveries: Sequence[NewDelivery], claim_for: timedelta,
                                filtered: Mapping[int, int] | None = None, *,
                                held: bool | Sequence[bool] = False, hold_for: timedelta | None = None
                                ) -> list[Delivery]:
        """Record deliveries durably as pending, claimed by the caller for ``claim_for``; known ones are skipped,
        except one held behind an earlier change (``publisher.sending.ordering.HELD``), which is taken over.

        ``held`` (for all, or one flag per delivery): parked behind an earlier change still in the caller's
        memory, claimed for ``hold_for`` (default ``claim_for``) and never due until ``release_held``.
        ``filtered`` (integration id -> events its conditions filtered out) is counted in the same
        statement. ``park`` is the same with no claim: the retry poller hands the deliveries out.

        Taking a held delivery over is always safe: its record is recorded again only by a reader of its
        partition, which read the earlier change it was held behind first (that change was not settled, so no
        commit passed it) and left it in the store or in its own memory - where this one then waits behind it.
        """
        counts = [list(filtered or {}), list((filtered or {}).values())]
        if not deliveries:
            if counts[0]:
                await self._binary(_COUNT_FILTERED, counts, "cannot count filtered events")
            return []
        flags = [held] * len(deliveries) if isinstance(held, bool) else list(held)
        placed = sorted(zip(deliveries, flags, strict=True), key=lambda pair: _place(pair[0]))
        # One statement, parameters as binary arrays (no per-value escaping); the bodies are not sent back.
        sql = (f"WITH counted AS ({_COUNT_FILTERED}) "
               f"INSERT INTO {{s}}.deliveries ({_NEW_COLUMNS}, claimed_until, next_attempt_at) "
               f"SELECT {_NEW_COLUMNS}, now() + CASE WHEN n.held THEN %b ELSE %b END, "
               f"CASE WHEN n.held THEN {HELD} ELSE now() END "
               f"FROM unnest({_NEW_ARRAYS}, %b::bool[]) AS n({_NEW_COLUMNS}, held) "
               "ON CONFLICT (integration_id, event_id) DO UPDATE SET claimed_until = EXCLUDED.claimed_until, "
               "next_attempt_at = EXCLUDED.next_attempt_at WHERE {s}.deliveries.status = 'pending' "
               f"AND {{s}}.deliveries.next_attempt_at >= {HELD} "
               "RETURNING id, integration_id, event_id, entity_path, attempts, created_at, trigger")
        columns = _columns([delivery for delivery, _ in placed])  # already in place order: the flags line up
        rows = await self._binary(sql, [*counts, hold_for if hold_for is not None else claim_for, claim_for,
                                        *columns, [flag for _, flag in placed]], "cannot record deliveries")
        by_key = {(d.integration_id, d.event_id): d for d in deliveries}
        return sorted((Delivery(id, integration_id, by_key[(integration_id, event_id)].webhook_id, entity_path,
                                by_key[(integration_id, event_id)].body, attempts, created_at, trigger)
                       for id, integration_id, event_id, entity_path, attempts, created_at, trigger in rows),
                      key=lambda delivery: delivery.id)

    async def park(self, deliveries: Sequence[NewDelivery], filtered: Mapping[int, int] | None = None, *,
                   behind: Sequence[NewDelivery] = (), hold_for: timedelta = timedelta(seconds=60)
                   ) -> list[Delivery]:
        """Deliveries that must wait (``publisher.sending.ordering``), stored pending and due now; known ones skipped.

        ``behind``: deliveries held behind an earlier change of their entity still in the caller's memory,
        written in the same statement, so a later change parked with them never shows up in the store without
        them (the poller could take it first). Returns those held ones, claimed for ``hold_for``.
        """
        together = [*deliveries, *behind]
        written = await self.create_deliveries(together, timedelta(0), filtered,
                                               held=[False] * len(deliveries) + [True] * len(behind),
                                               hold_for=hold_for)
        held = {(d.integration_id, d.webhook_id) for d in behind}
        return [d for d in written if (d.integration_id, d.webhook_id) in held]

    async def waiting_entities(self, pairs: Sequence[tuple[int, str]]) -> set[tuple[int, str]]:
        """Which (integration id, entity path) pairs have a delivery waiting in the store."""
        if not pairs:
            return set()
        rows = await self._binary(WAITING_ENTITIES, [[i for i, _ in pairs], [p for _, p in pairs]],
                                  "cannot look for waiting deliveries")
        return {(integration_id, entity_path) for integration_id, entity_path in rows}

    async def log_first_attempts(self, records: Sequence[AttemptRecord]) -> None:
        """Write live deliveries with their first attempt: one row each in the log, the attempt inside it.

        A delivery already in the store (its record was consumed again after a crash or a
        rebalance, and sent again with the same webhook-id) takes the attempt as its next one.
        """
        if not records:
            return
        latest = list({(r.integration_id, r.live.event_id): r for r in records if r.live}.values())
        news = [r.live for r in latest if r.live is not None]
        columns = [[getattr(d, name) for d in news] for name in _STORED]
        moves = [[r.status for r in latest], [r.next_attempt_at for r in latest]]
        attempts = [[r.started_at for r in latest], [r.url for r in latest],
                    [as_json(r.request_headers) for r in latest], [r.response_status for r in latest],
                    [None if r.response_headers is None else as_json(r.response_headers) for r in latest],
                    [r.response_body for r in latest], [r.duration_ms for r in latest], [r.error for r in latest],
                    [outcome_of(r) for r in latest]]
        await self._binary(_LOG_FIRST, [*columns, *moves, *attempts], "cannot log attempts")

    async def claim_due(self, limit: int, claim_for: timedelta, room: Mapping[int, int] | None = None,
                        per_integration: int = CLAIM_PER_INTEGRATION) -> list[Delivery]:
        """Pending deliveries whose time has come and that the ordering rule lets go, claimed fairly.

        Fair: each integration offers at most ``per_integration`` of its oldest due deliveries,
        ranked; the claim takes every organization's first before any organization's second,
        and within an organization every integration's first before any second. So neither a
        large backlog nor many integrations let one tenant hold back another's retries.
        ``room`` (integration id -> deliveries its lane can take now) lowers an integration's
        offer to what its lane takes: a full lane offers nothing and takes no share of the claim.
        Claimed with SKIP LOCKED, so several publishers share the work.
        """
        rows = await self._binary(CLAIM_DUE, claim_parameters(limit, claim_for, room, per_integration),
                                  "cannot claim due deliveries")
        return [Delivery(id, integration_id, webhook_id, entity_path, bytes(body), attempts, created_at,
                         trigger)
                for id, integration_id, webhook_id, entity_path, body, attempts, created_at, trigger in rows]

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        """Log attempts and move their deliveries on, in one statement.

        Only a delivery still claimed is moved on: one scheduled again since the attempt was claimed
        (``redeliver``, ``recover``, a replay; they drop the claim) stays due, so the request asked
        for after this attempt began is still sent.
        """
        if not records:
            return
        latest = list({r.delivery_id: r for r in records}.values())  # a delivery's last attempt decides its state
        attempts = [[r.delivery_id for r in records], [r.integration_id for r in records],
                    [r.number for r in records], [r.trigger for r in records], [r.started_at for r in records],
                    [r.url for r in records], [as_json(r.request_headers) for r in records],
                    [r.response_status for r in records],
                    [None if r.response_headers is None else as_json(r.response_headers) for r in records],
                    [r.response_body for r in records], [r.duration_ms for r in records], [r.error for r in records],
                    [outcome_of(r) for r in records]]
        moves = [[r.delivery_id for r in latest], [r.status for r in latest], [r.number for r in latest],
                 [r.next_attempt_at for r in latest], [r.error for r in latest]]
        sql = (f"WITH {_LOCKED}, "
               "logged AS (INSERT INTO {s}.attempts (delivery_id, integration_id, number, trigger, started_at, "
               "url, request_headers, response_status, response_headers, response_body, duration_ms, error, outcome) "
               "SELECT a.delivery_id, a.integration_id, a.number, a.trigger, a.started_at, a.url, "
               "a.request_headers::jsonb, a.response_status, a.response_headers::jsonb, a.response_body, "
               "a.duration_ms, a.error, a.outcome FROM unnest(%b::bigint[], %b::bigint[], %b::int[], %b::text[], "
               "%b::timestamptz[], %b::text[], %b::text[], %b::int[], %b::text[], %b::bytea[], %b::float8[], "
               "%b::text[], %b::text[]) AS a(delivery_id, integration_id, number, trigger, started_at, url, "
               "request_headers, response_status, response_headers, response_body, duration_ms, error, outcome)) "
               # A delivery no longer claimed was scheduled again while this attempt was in flight (a
               # redeliver, a replay): the attempt is logged, but it does not settle the delivery.
               "UPDATE {s}.deliveries d SET status = CASE WHEN d.claimed_until IS NULL THEN d.status "
               "ELSE m.status END, attempts = greatest(d.attempts, m.number), next_attempt_at = CASE WHEN "
               "d.claimed_until IS NULL THEN d.next_attempt_at ELSE coalesce(m.next_attempt_at, d.next_attempt_at) "
               "END, claimed_until = NULL, "
               "last_error = m.error, updated_at = now() FROM unnest(%b::bigint[], %b::text[], %b::int[], "
               "%b::timestamptz[], %b::text[]) AS m(id, status, number, next_attempt_at, error), locked "
               "WHERE d.id = m.id AND locked.id = m.id")
        await self._binary(sql, [moves[0], *attempts, *moves], "cannot record attempts")

    async def release(self, delivery_ids: Sequence[int]) -> None:
        """Give up claims so that the poller (here or in another publisher) may hand the deliveries out again."""
        if delivery_ids:
            await self._binary(f"WITH {_LOCKED_PENDING} UPDATE {{s}}.deliveries d "
                               "SET claimed_until = NULL FROM locked WHERE d.id = locked.id", [list(delivery_ids)],
                               "cannot release claims")

    async def release_held(self, delivery_ids: Sequence[int]) -> None:
        """Deliveries held behind an earlier change that is settled now: due at once, for any poller."""
        if delivery_ids:
            await self._binary(f"WITH {_LOCKED_PENDING} UPDATE {{s}}.deliveries d SET claimed_until = NULL, "
                               f"next_attempt_at = now() FROM locked WHERE d.id = locked.id "
                               f"AND d.next_attempt_at >= {HELD}", [list(delivery_ids)],
                               "cannot release held deliveries")

    async def extend_claims(self, delivery_ids: Sequence[int], claim_for: timedelta) -> None:
        """Keep deliveries this publisher still holds claimed for ``claim_for`` more."""
        if delivery_ids:
            await self._binary(f"WITH {_LOCKED_PENDING} UPDATE {{s}}.deliveries d "
                               "SET claimed_until = now() + %b FROM locked WHERE d.id = locked.id",
                               [list(delivery_ids), claim_for], "cannot renew claims")

    async def redeliver(self, delivery_id: int, organization_id: str | None = None) -> Scheduled:
        """Schedule one more attempt of a delivery now (trigger ``manual``)."""
        rows = await self._rows(
            "UPDATE {s}.deliveries SET status = 'pending', next_attempt_at = now(), claimed_until = NULL, "
            "trigger = 'manual', updated_at = now() WHERE id = :id "
            "AND (CAST(:org AS text) IS NULL OR organization_id = :org) "
            "RETURNING id, event_id, webhook_id", {"id": delivery_id, "org": organization_id})
        if not rows:
            raise NotFound(f"delivery {delivery_id} does not exist")
        return Scheduled(**rows[0])

    async def recover(self, integration_id: int, since: datetime) -> list[Scheduled]:
        """Schedule every delivery of the integration that failed since ``since`` for one more attempt."""
        return [Scheduled(**row) for row in await self._rows(
            "UPDATE {s}.deliveries SET status = 'pending', next_attempt_at = now(), claimed_until = NULL, "
            "trigger = 'manual', updated_at = now() WHERE integration_id = :integration AND status = 'failed' "
            "AND updated_at >= :since RETURNING id, event_id, webhook_id",
            {"integration": integration_id, "since": since})]

    async def schedule_replay(self, deliveries: Sequence[NewDelivery], *, redeliver: bool = True
                              ) -> list[Scheduled]:
        """Deliver these (trigger ``replay``); ``redeliver``: also those delivered before, else only the new ones."""
        if not deliveries:
            return []
        again = ("DO UPDATE SET status = 'pending', next_attempt_at = now(), claimed_until = NULL, "
                 "trigger = 'replay', updated_at = now()") if redeliver else "DO NOTHING"
        rows = await self._binary(
            f"INSERT INTO {{s}}.deliveries ({_NEW_COLUMNS}, trigger) SELECT *, 'replay' FROM unnest({_NEW_ARRAYS}) "
            f"ON CONFLICT (integration_id, event_id) {again} RETURNING id, event_id, webhook_id",
            _columns(deliveries), "cannot schedule replayed deliveries")
        return [Scheduled(*row) for row in rows]
