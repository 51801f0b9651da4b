"""``walhook backfill start|list|show|pause|resume|cancel``: existing rows as ``read`` events.

``start --wait`` and ``show --follow`` follow a backfill to its end: a progress bar on a terminal,
one plain line every few seconds otherwise (logs, CI).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import TextIO

from control import actions
from control.actor import OPERATOR
from control.backfills import backfill_summary
from models.settings import EntitySettings
from publisher.store import Backfill, Store
from walhook.cli.common import Command, Group, settings_of, show, store_of, table

PLAIN_EVERY = 5.0  # seconds between progress lines when the output is not a terminal


async def cmd_start(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    async with store_of(args) as store:
        organization = args.org
        if args.integration is not None:
            organization = (await store.integration(args.integration)).organization_id
        job = await actions.start_backfill(store, settings.entities, settings.source, OPERATOR, table=args.table,
                                           entity_key=args.entity_key, organization_id=organization,
                                           integration_id=args.integration, row_filter=args.where)
        show(args, asdict(job), f"{backfill_summary(job, settings.entities)}\n(the capture process runs it; "
                                f"follow it with: walhook backfill show {job.id} --follow)")
        if args.wait:
            job = await follow(store, job.id, sys.stderr, quiet=args.json, entities=settings.entities)
    return 0 if job.state in ("running", "paused", "done") else 1


async def cmd_list(args: argparse.Namespace) -> int:
    async with store_of(args) as store:
        jobs = await store.backfills(None, args.state, args.limit)
    rows = [{**asdict(job), "percent": "-" if job.percent is None else f"{job.percent:.1f}%"} for job in jobs]
    table(args, rows, [("id", 5), ("table_name", 24), ("integration_id", 15), ("state", 10), ("percent", 8),
                       ("rows_read", 10), ("rows_published", 15), ("created_at", 34)])
    return 0


async def cmd_show(args: argparse.Namespace) -> int:
    async with store_of(args) as store:
        job = await store.backfill(None, args.backfill)
        if args.follow and not job.finished:
            job = await follow(store, job.id, sys.stderr, quiet=args.json, entities=settings_of(args).entities)
    show(args, {**asdict(job), "percent": job.percent}, backfill_summary(job, settings_of(args).entities))
    return 0 if job.state != "failed" else 1


async def cmd_change(args: argparse.Namespace) -> int:
    async with store_of(args) as store:
        job = await actions.change_backfill(store, OPERATOR, args.backfill, args.action)
    show(args, asdict(job), backfill_summary(job, settings_of(args).entities))
    return 0


async def follow(store: Store, backfill_id: int, out: TextIO, quiet: bool = False,
                 interval: float = 0.5, entities: Sequence[EntitySettings] = ()) -> Backfill:
    """Poll the backfill until it is no longer running; draw its progress on ``out`` meanwhile."""
    bar = _Bar(out) if out.isatty() and not quiet else None
    last_line = 0.0
    while True:
        job = await store.backfill(None, backfill_id)
        if bar is not None:
            bar.draw(job)
        elif not quiet and (job.state != "running" or time.monotonic() - last_line >= PLAIN_EVERY):
            print(backfill_summary(job, entities), file=out, flush=True)
            last_line = time.monotonic()
        if job.state != "running":
            if bar is not None:
                bar.close()
            return job
        await asyncio.sleep(interval)


class _Bar:
    """A rich progress bar of rows read against the estimate."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[state]}"), TimeElapsedColumn(),
                                  console=Console(file=out), transient=False)
        self._task = self._progress.add_task("backfill", total=None, state="")
        self._progress.start()

    def draw(self, job: Backfill) -> None:
        total = job.rows_read if job.state == "done" else max(job.rows_estimated or 0, job.rows_read) or None
        self._progress.update(self._task, description=f"backfill {job.id} {job.table_name}", total=total,
                              completed=job.rows_read, state=job.state)

    def close(self) -> None:
        self._progress.stop()


def register(command: Command, group: Group) -> None:
    backfill = group("backfill", "backfills: existing rows of a captured table as read events")
    start = command("start", cmd_start, "start a backfill (the capture process runs it)", backfill)
    which = start.add_mutually_exclusive_group(required=True)
    which.add_argument("--table", help="captured table, schema.table")
    which.add_argument("--entity-key", help="or its entity key")
    start.add_argument("--integration", type=int, help="only this integration receives the rows "
                       "(default: every integration subscribed to KEY:read)")
    start.add_argument("--org", help="only this organization's rows")
    start.add_argument("--where", help="conditions joined by AND, e.g. \"status = 'open' AND id > 100\"")
    start.add_argument("--wait", action="store_true", help="follow it until it ends")
    listing = command("list", cmd_list, "backfills, newest first", backfill)
    listing.add_argument("--state", choices=["running", "paused", "cancelled", "failed", "done"])
    listing.add_argument("--limit", type=int, default=50)
    shown = command("show", cmd_show, "one backfill", backfill)
    shown.add_argument("backfill", type=int)
    shown.add_argument("--follow", action="store_true", help="follow it until it ends")
    for action, text in (("pause", "pause a running backfill"), ("resume", "resume a paused backfill"),
                         ("cancel", "cancel a backfill")):
        changed = command(action, cmd_change, text, backfill)
        changed.add_argument("backfill", type=int)
        changed.set_defaults(action=action)
