"""Starting a backfill (for the API and the CLI alike) and saying how far one got.

A backfill names a captured table (by its table or its entity key), optionally a filter, and a
target: every integration that subscribes to ``KEY:read``, or one integration. It is checked
before it is stored - the table must be configured, the filter readable and, when ``[source]`` is
configured, the table must have a key and the filter's columns must exist - and the capture
process checks again when it starts it, failing the job with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import psycopg

from cdc.backfill_source import plan_table
from cdc.errors import BackfillRefused
from cdc.source import connect_control
from models.filters import FilterError, parse_filter
from models.settings import EntitySettings, SourceSettings
from publisher.store import Backfill, Store

log = logging.getLogger("walhook.backfill")


def entity_of(entities: Sequence[EntitySettings], *, table: str | None = None,
              entity_key: str | None = None) -> EntitySettings:
    """The ``[[entities]]`` entry a backfill names; ``BackfillRefused`` listing the known ones otherwise."""
    wanted = table if table is None or "." in table else f"public.{table}"
    for entity in entities:
        if entity.table == wanted or (entity_key is not None and entity.entity_key == entity_key):
            return entity
    known = ", ".join(f"{e.entity_key} ({e.table})" for e in entities) or "none configured"
    raise BackfillRefused(f"no captured table {table or entity_key!r}; known: {known}")


async def start_backfill(store: Store, entity: EntitySettings, source: SourceSettings | None, *,
                         organization_id: str | None = None, integration_id: int | None = None,
                         row_filter: str | None = None) -> Backfill:
    """Check the backfill and store it; a capture process of the table runs it."""
    try:
        if row_filter:
            parse_filter(row_filter)
    except FilterError as exc:
        raise BackfillRefused(str(exc)) from exc
    if source is not None:
        await _check_source(source, entity, row_filter, organization_id)
    if integration_id is None:
        await _check_someone_receives(store, entity, organization_id)
    return await store.create_backfill(entity.table, organization_id=organization_id,
                                       integration_id=integration_id, row_filter=row_filter)


async def _check_source(source: SourceSettings, entity: EntitySettings, row_filter: str | None,
                        organization_id: str | None) -> None:
    try:
        async with await connect_control(source.dsn) as conn:
            await plan_table(conn, entity, row_filter, organization_id)
    except psycopg.OperationalError as exc:  # the capture process checks again when it starts the job
        log.warning("cannot check the backfill of %s against the source now: %s", entity.table, exc)


async def _check_someone_receives(store: Store, entity: EntitySettings, organization_id: str | None) -> None:
    """Refuse a backfill for every subscriber when no enabled integration subscribes to ``KEY:read``:
    ``*`` means the three changes only, so such a backfill would publish every row to nobody."""
    integrations = await store.integrations_of(organization_id)
    if not any(sub.covers(entity.entity_key, "read") for i in integrations for sub in i.subscriptions):
        whose = f" of organization {organization_id!r}" if organization_id else ""
        raise BackfillRefused(f"no enabled integration{whose} subscribes to {entity.entity_key}:read, so the "
                              f"backfill's rows would reach nobody ('*' means created, updated and deleted only); "
                              f"add '{entity.entity_key}:read' to an integration's events, or name one integration")


def backfill_summary(job: Backfill, entities: Sequence[EntitySettings] = ()) -> str:
    """One line: ``backfill 3 of public.items for integration 7: running, 41.2% (4,120 of an estimated 10,000
    rows read) ...``; ``entities`` name the key its subscribers subscribe to."""
    key = next((e.entity_key for e in entities if e.table == job.table_name), job.table_name)
    target = f"every subscriber to {key}:read" if job.integration_id is None else f"integration {job.integration_id}"
    percent = "" if job.percent is None else f", {job.percent:.1f}%"
    estimate = "" if job.rows_estimated is None else f" of an estimated {job.rows_estimated:,}"
    line = (f"backfill {job.id} of {job.table_name} for {target}: {job.state}{percent} ({job.rows_read:,}{estimate} "
            f"rows read, {job.rows_published:,} published, {job.rows_superseded:,} superseded by the stream)")
    return line + (f": {job.error}" if job.error else "")
