"""Replay jobs: created by the API or the CLI (or by enabling an integration), run by a publisher.

A job is claimed like a delivery (``claimed_until``, SKIP LOCKED) and its progress is kept per
partition, so a publisher that dies mid-replay leaves a job another publisher resumes where the
first one stopped.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from models.errors import Conflict, NotFound
from publisher.jobs.replay_input import replay_start
from publisher.store.deliveries import DeliveryStore
from publisher.store.engine import as_json
from publisher.store.rows import ReplayJob

_JOB = ("id, organization_id, integration_id, state, reason, start_offset, since, end_positions, progress, scanned, "
        "scheduled, error, cancel_requested, created_at, updated_at, finished_at")


def _job(row: dict[str, Any]) -> ReplayJob:
    ends = row["end_positions"]
    return ReplayJob(**{**row, "end_positions": None if ends is None else {int(p): int(o) for p, o in ends.items()},
                        "progress": {int(p): int(o) for p, o in row["progress"].items()}})


class JobStore(DeliveryStore):
    """Replay jobs and the enable that starts one."""

    async def create_replay_job(self, organization_id: str, integration_id: int, *, start_offset: int | None = None,
                                since: datetime | None = None, limit: int | None = None) -> ReplayJob:
        """A replay of one integration from an offset (every partition) or a moment.

        ``JobRefused`` (before anything is stored) when the start could never run; see
        ``publisher.jobs.replay_input``. ``limit``: how many requested jobs the organization may have
        running or queued; past it ``Conflict``, naming it. (A catch-up after an enable is not counted.)
        """
        start_offset, since = replay_start(start_offset, since)
        await self.integration_of(organization_id, integration_id)
        rows = await self._rows(
            f"INSERT INTO {{s}}.replay_jobs (organization_id, integration_id, start_offset, since, reason) "
            f"SELECT organization_id, id, :offset, :since, 'requested' FROM {{s}}.integrations "
            f"WHERE id = :id AND organization_id = :org AND (CAST(:limit AS int) IS NULL OR (SELECT count(*) "
            f"FROM {{s}}.replay_jobs WHERE organization_id = :org AND state = 'running' AND reason = 'requested') "
            f"< :limit) RETURNING {_JOB}",
            {"org": organization_id, "id": integration_id, "offset": start_offset, "since": since, "limit": limit})
        if not rows:
            raise Conflict(f"organization {organization_id!r} already has {limit} replay jobs running or queued, "
                           "the most allowed ([api] max_replay_jobs_per_organization); wait for one to end or "
                           "cancel one")
        return _job(rows[0])

    async def enable(self, organization_id: str | None, integration_id: int, *, replay: bool = True
                     ) -> ReplayJob | None:
        """Enable an integration; unless told not to, catch it up with a replay from when it was disabled.

        One statement: the integration is never seen enabled without its catch-up job, so no
        live change can overtake the replayed ones (see ``publisher.sending.ordering``).
        """
        rows = await self._rows(
            "WITH before AS (SELECT id, organization_id, enabled, disabled_at, disabled_positions "
            "FROM {s}.integrations WHERE id = :id AND (CAST(:org AS text) IS NULL OR organization_id = :org) "
            "FOR UPDATE), "
            "job AS (INSERT INTO {s}.replay_jobs (organization_id, integration_id, since, reason, progress) "
            "SELECT organization_id, id, disabled_at, 'enabled', coalesce(disabled_positions, '{}') FROM before "
            "WHERE :replay AND NOT enabled AND disabled_at IS NOT NULL RETURNING id), "
            "enabled AS (UPDATE {s}.integrations i SET enabled = true, disabled_reason = NULL, disabled_at = NULL, "
            "disabled_positions = NULL, "
            "failing_since = NULL, catching_up_job = coalesce((SELECT id FROM job), i.catching_up_job), "
            "updated_at = now() FROM before WHERE i.id = before.id RETURNING i.id) "
            "SELECT (SELECT id FROM job) AS job_id, (SELECT count(*) FROM enabled) AS found",
            {"id": integration_id, "org": organization_id, "replay": replay})
        if not rows[0]["found"]:
            raise NotFound(f"integration {integration_id} does not exist")
        return None if rows[0]["job_id"] is None else await self.replay_job(None, int(rows[0]["job_id"]))

    async def replay_job(self, organization_id: str | None, job_id: int) -> ReplayJob:
        rows = await self._rows(f"SELECT {_JOB} FROM {{s}}.replay_jobs WHERE id = :id "
                                "AND (CAST(:org AS text) IS NULL OR organization_id = :org)",
                                {"id": job_id, "org": organization_id})
        if not rows:
            raise NotFound(f"replay job {job_id} does not exist")
        return _job(rows[0])

    async def replay_jobs(self, organization_id: str | None, integration_id: int | None = None,
                          state: str | None = None, limit: int = 50) -> list[ReplayJob]:
        """Replay jobs newest first."""
        return [_job(row) for row in await self._rows(
            f"SELECT {_JOB} FROM {{s}}.replay_jobs WHERE (CAST(:org AS text) IS NULL OR organization_id = :org) "
            "AND (CAST(:integration AS bigint) IS NULL OR integration_id = :integration) "
            "AND (CAST(:state AS text) IS NULL OR state = :state) ORDER BY id DESC LIMIT :limit",
            {"org": organization_id, "integration": integration_id, "state": state, "limit": limit})]

    async def cancel_replay_job(self, organization_id: str | None, job_id: int) -> ReplayJob:
        """Ask a running job to stop; the publisher running it ends it as cancelled at its next step."""
        await self.replay_job(organization_id, job_id)
        await self._rows("UPDATE {s}.replay_jobs SET cancel_requested = true, updated_at = now() "
                         "WHERE id = :id AND state = 'running'", {"id": job_id})
        return await self.replay_job(organization_id, job_id)

    async def claim_replay_job(self, claim_for: timedelta) -> ReplayJob | None:
        """A running job nobody works on (or whose publisher died), claimed for ``claim_for``.

        Fair across organizations: an enable's catch-up first (live changes of its integration wait
        behind it), then the organization served longest ago (its jobs' last slice, finished jobs included:
        an organization whose jobs each end within one slice would otherwise always look unserved), then
        within it the job served longest ago. A publisher runs a job a slice at a time (``publisher.jobs.replay``), so
        one organization's many or long jobs never hold another's for more than a slice.
        """
        rows = await self._rows(
            "WITH served AS (SELECT organization_id, max(sliced_at) AS at FROM {s}.replay_jobs WHERE organization_id "
            "IN (SELECT organization_id FROM {s}.replay_jobs WHERE state = 'running') GROUP BY organization_id) "
            "UPDATE {s}.replay_jobs SET claimed_until = now() + :claim, updated_at = now() WHERE id = ("
            "SELECT j.id FROM {s}.replay_jobs j JOIN served USING (organization_id) WHERE j.state = 'running' "
            "AND (j.claimed_until IS NULL OR j.claimed_until < now()) "
            "ORDER BY j.reason <> 'enabled', served.at NULLS FIRST, j.sliced_at NULLS FIRST, j.id "
            f"LIMIT 1 FOR UPDATE OF j SKIP LOCKED) RETURNING {_JOB}", {"claim": claim_for})
        return _job(rows[0]) if rows else None

    async def others_waiting(self, job_id: int) -> bool:
        """Whether a job other than ``job_id`` waits for a publisher (one of them may take this one's turn)."""
        rows = await self._rows("SELECT 1 FROM {s}.replay_jobs WHERE state = 'running' AND id <> :id "
                                "AND (claimed_until IS NULL OR claimed_until < now()) LIMIT 1", {"id": job_id})
        return bool(rows)

    async def yield_replay_job(self, job_id: int) -> None:
        """Give a job up after a slice (its progress is kept): the next claim may go to another organization."""
        await self._rows("UPDATE {s}.replay_jobs SET claimed_until = NULL, sliced_at = now(), updated_at = now() "
                         "WHERE id = :id AND state = 'running'", {"id": job_id})

    async def note_replay_progress(self, job_id: int, *, progress: dict[int, int], scanned: int, scheduled: int,
                                   end_positions: dict[int, int] | None, claim_for: timedelta) -> bool:
        """Keep how far a job got and extend its claim; True when someone asked to cancel it."""
        rows = await self._rows(
            "UPDATE {s}.replay_jobs SET progress = CAST(:progress AS jsonb), scanned = :scanned, "
            "scheduled = :scheduled, end_positions = CAST(:ends AS jsonb), claimed_until = now() + :claim, "
            "updated_at = now() WHERE id = :id RETURNING cancel_requested",
            {"id": job_id, "progress": as_json({str(p): o for p, o in progress.items()}), "scanned": scanned,
             "scheduled": scheduled, "claim": claim_for,
             "ends": None if end_positions is None else as_json({str(p): o for p, o in end_positions.items()})})
        return bool(rows and rows[0]["cancel_requested"])

    async def finish_replay_job(self, job_id: int, state: str, error: str | None = None) -> None:
        """End a job (done, failed or cancelled); an integration it was catching up goes live again."""
        await self._rows(
            "WITH job AS (UPDATE {s}.replay_jobs SET state = :state, error = :error, finished_at = now(), "
            "claimed_until = NULL, sliced_at = now(), updated_at = now() WHERE id = :id RETURNING id) "
            "UPDATE {s}.integrations SET catching_up_job = NULL, updated_at = now() "
            "WHERE catching_up_job IN (SELECT id FROM job)", {"id": job_id, "state": state, "error": error})
