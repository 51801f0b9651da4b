"""Backfill jobs: created by the API or the CLI, run by the capture process, followed by everyone.

A running backfill is claimed by one capture process (``claimed_until``, SKIP LOCKED) and its
progress - the cursor and the counts - is written only after Kafka acknowledged a chunk, so a
capture process killed mid-backfill leaves a job the next one resumes from that cursor.
Pause, resume and cancel change the state here; the capture process sees it at its next chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from models.errors import Conflict, NotFound
from models.jobs import Backfill
from publisher.store.engine import as_json
from publisher.store.jobs import JobStore

_BACKFILL = ("id, table_name, organization_id, integration_id, filter, state, key_columns, cursor, rows_estimated, "
             "rows_read, rows_published, rows_superseded, chunks, chunk_rows, error, created_at, updated_at, "
             "finished_at")

# What each operator action may change: action -> (states it applies to, the new state).
_ACTIONS = {"pause": (("running",), "paused"), "resume": (("paused",), "running"),
            "cancel": (("running", "paused"), "cancelled")}


class BackfillStore(JobStore):
    """Backfill jobs: create, list, pause / resume / cancel, and the capture process's claim and progress."""

    async def create_backfill(self, table: str, *, organization_id: str | None = None,
                              integration_id: int | None = None, row_filter: str | None = None) -> Backfill:
        """A backfill of ``table``; for one integration, only that integration's organization's rows are read.

        ``Conflict`` when one of the same table for the same target is running or paused.
        """
        try:
            rows = await self._rows(
                "INSERT INTO {s}.backfills (table_name, organization_id, integration_id, filter) "
                "SELECT :table, coalesce(i.organization_id, o.id), i.id, :filter FROM (SELECT 1) one "
                "LEFT JOIN {s}.organizations o ON o.id = :org LEFT JOIN {s}.integrations i ON i.id = :integration "
                "AND (CAST(:org AS text) IS NULL OR i.organization_id = :org) "
                "WHERE (CAST(:org AS text) IS NULL OR o.id IS NOT NULL) "
                "AND (CAST(:integration AS bigint) IS NULL OR i.id IS NOT NULL) "
                f"RETURNING {_BACKFILL}",
                {"table": table, "org": organization_id, "integration": integration_id, "filter": row_filter})
        except Conflict as exc:
            raise Conflict(f"a backfill of {table} for {_target(integration_id)} is already running or paused; "
                           "cancel it or wait for it to end") from exc
        if not rows:
            raise NotFound(f"integration {integration_id} does not exist" if integration_id is not None
                           else f"organization {organization_id} does not exist")
        return _backfill(rows[0])

    async def backfill(self, organization_id: str | None, backfill_id: int) -> Backfill:
        rows = await self._rows(f"SELECT {_BACKFILL} FROM {{s}}.backfills WHERE id = :id "
                                "AND (CAST(:org AS text) IS NULL OR organization_id = :org)",
                                {"id": backfill_id, "org": organization_id})
        if not rows:
            raise NotFound(f"backfill {backfill_id} does not exist")
        return _backfill(rows[0])

    async def backfills(self, organization_id: str | None, state: str | None = None,
                        limit: int = 50) -> list[Backfill]:
        """Backfills newest first."""
        return [_backfill(row) for row in await self._rows(
            f"SELECT {_BACKFILL} FROM {{s}}.backfills WHERE (CAST(:org AS text) IS NULL OR organization_id = :org) "
            "AND (CAST(:state AS text) IS NULL OR state = :state) ORDER BY id DESC LIMIT :limit",
            {"org": organization_id, "state": state, "limit": limit})]

    async def change_backfill(self, organization_id: str | None, backfill_id: int, action: str) -> Backfill:
        """``pause``, ``resume`` or ``cancel``; ``Conflict`` naming the state when it does not apply."""
        current = await self.backfill(organization_id, backfill_id)
        states, new_state = _ACTIONS[action]
        rows = await self._rows(
            "UPDATE {s}.backfills SET state = :new, updated_at = now(), "
            "finished_at = CASE WHEN :new = 'cancelled' THEN now() END WHERE id = :id AND state = ANY(:states) "
            "RETURNING id", {"id": backfill_id, "new": new_state, "states": list(states)})
        if not rows:
            raise Conflict(f"backfill {backfill_id} is {current.state}; {action} applies to a "
                           f"{' or '.join(states)} backfill")
        return await self.backfill(organization_id, backfill_id)

    async def claim_backfill(self, tables: Sequence[str], claim_for: timedelta, claimer: str) -> Backfill | None:
        """A running backfill of one of ``tables`` that no capture process works on, claimed for ``claim_for``.

        ``claimer`` names the replication slot: only one process streams a slot at a time, so a job
        claimed under this slot belongs to a session that has ended (killed, say) and is taken over at once.
        Fair across organizations, like replay jobs: the organization served longest ago first (its
        backfills' last turn, finished ones included), then its backfill served longest ago; a capture
        process runs a backfill a turn at a time (``cdc.backfill_runner``).
        """
        rows = await self._rows(
            "WITH served AS (SELECT coalesce(organization_id, '') AS org, max(sliced_at) AS at FROM {s}.backfills "
            "WHERE coalesce(organization_id, '') IN (SELECT coalesce(organization_id, '') FROM {s}.backfills "
            "WHERE state = 'running') GROUP BY 1) "
            "UPDATE {s}.backfills SET claimed_by = :claimer, claimed_until = now() + :claim, updated_at = now() "
            "WHERE id = (SELECT b.id FROM {s}.backfills b JOIN served ON served.org = coalesce(b.organization_id, '') "
            "WHERE b.state = 'running' AND b.table_name = ANY(:tables) "
            "AND (b.claimed_until IS NULL OR b.claimed_until < now() OR b.claimed_by = :claimer) "
            "ORDER BY served.at NULLS FIRST, b.sliced_at NULLS FIRST, b.id LIMIT 1 FOR UPDATE OF b SKIP LOCKED) "
            f"RETURNING {_BACKFILL}", {"claim": claim_for, "tables": list(tables), "claimer": claimer})
        return _backfill(rows[0]) if rows else None

    async def other_backfills_waiting(self, backfill_id: int, tables: Sequence[str]) -> bool:
        """Whether a backfill of ``tables`` other than this one waits for its turn."""
        return bool(await self._rows(
            "SELECT 1 FROM {s}.backfills WHERE state = 'running' AND id <> :id AND table_name = ANY(:tables) "
            "AND (claimed_until IS NULL OR claimed_until < now()) LIMIT 1",
            {"id": backfill_id, "tables": list(tables)}))

    async def note_backfill_progress(self, backfill: Backfill, claim_for: timedelta) -> str:
        """Keep a chunk's progress (after Kafka acknowledged it) and extend the claim; returns the job's state,
        which an operator may have changed to paused or cancelled meanwhile."""
        rows = await self._rows(
            "UPDATE {s}.backfills SET key_columns = CAST(:keys AS jsonb), cursor = CAST(:cursor AS jsonb), "
            "rows_estimated = :estimated, rows_read = :read, rows_published = :published, "
            "rows_superseded = :superseded, chunks = :chunks, chunk_rows = :chunk_rows, "
            "claimed_until = CASE WHEN state = 'running' THEN now() + :claim END, updated_at = now() "
            "WHERE id = :id RETURNING state",
            {"id": backfill.id, "keys": as_json(backfill.key_columns), "cursor": as_json(backfill.cursor),
             "estimated": backfill.rows_estimated, "read": backfill.rows_read, "published": backfill.rows_published,
             "superseded": backfill.rows_superseded, "chunks": backfill.chunks, "chunk_rows": backfill.chunk_rows,
             "claim": claim_for})
        return str(rows[0]["state"]) if rows else "cancelled"

    async def finish_backfill(self, backfill_id: int, state: str, error: str | None = None) -> None:
        """End a running backfill as done or failed (a paused or cancelled one keeps its state)."""
        await self._rows("UPDATE {s}.backfills SET state = :state, error = :error, finished_at = now(), "
                         "claimed_until = NULL, sliced_at = now(), updated_at = now() "
                         "WHERE id = :id AND state = 'running'",
                         {"id": backfill_id, "state": state, "error": error})

    async def release_backfill(self, backfill_id: int) -> None:
        """Give the claim up (its turn or the session ends): the next claim may take it, or another, at once."""
        await self._rows("UPDATE {s}.backfills SET claimed_until = NULL, sliced_at = now() WHERE id = :id",
                         {"id": backfill_id})


def _backfill(row: dict[str, Any]) -> Backfill:
    return Backfill(**row)


def _target(integration_id: int | None) -> str:
    return "every integration" if integration_id is None else f"integration {integration_id}"
