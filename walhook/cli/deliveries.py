"""The webhook jobs: listing deliveries and their attempts, redeliver, recover, replay jobs, samples."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from types import SimpleNamespace
from typing import Any

import orjson

from control.actor import OPERATOR
from models.errors import WalhookError
from models.events import parse_time
from walhook.cli.common import Command, Group, moment, settings_of, show, store_of, table
from walhook.cli.remote import ApiClient, api_of, follow, follow_settling


async def cmd_deliveries_list(args: argparse.Namespace) -> int:
    if remote := api_of(args):
        page = await remote.call("GET", "/v1/deliveries", params={"integration_id": args.integration,
                                                                  "status": args.status, "limit": args.limit})
        rows = page["items"]
    else:
        async with store_of(args) as store:
            rows = await store.deliveries(args.integration, args.status, args.limit)
    table(args, rows, [("id", 6), ("integration_id", 15), ("status", 10), ("attempts", 9), ("trigger", 10),
                       ("webhook_id", 40)])
    return 0


async def cmd_deliveries_show(args: argparse.Namespace) -> int:
    if remote := api_of(args):
        detail = await remote.call("GET", f"/v1/deliveries/{args.delivery}")
        attempts: list[Any] = [SimpleNamespace(**{**a, "started_at": parse_time(a["started_at"])})
                               for a in detail["attempts_log"]]
    else:
        async with store_of(args) as store:
            await store.delivery_of(None, args.delivery)  # an unknown id is an error naming it, as through --api
            attempts = await store.attempts_of(args.delivery)
    if args.json:
        print(orjson.dumps([vars(a) if isinstance(a, SimpleNamespace) else asdict(a) for a in attempts],
                           default=lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                           ).decode())
        return 0
    for attempt in attempts:
        outcome = attempt.response_status or attempt.error
        print(f"#{attempt.number} {attempt.started_at:%Y-%m-%d %H:%M:%S} {attempt.trigger:<9} "
              f"{attempt.url} -> {outcome} in {attempt.duration_ms:.0f} ms")
    return 0


async def cmd_redeliver(args: argparse.Namespace) -> int:
    if remote := api_of(args):
        (row,) = (await remote.call("POST", f"/v1/deliveries/{args.delivery}/redeliver"))["scheduled"]
    else:
        from control import actions

        async with store_of(args) as store:
            row = asdict(await actions.redeliver(store, settings_of(args).api, OPERATOR, args.delivery))
    show(args, row, f"delivery {row['id']} ({row['webhook_id']}) scheduled for one more attempt")
    return 0


async def cmd_recover(args: argparse.Namespace) -> int:
    if remote := api_of(args):
        rows = (await remote.call("POST", f"/v1/integrations/{args.integration}/recover",
                                  {"since": moment(args.since).isoformat()}))["scheduled"]
    else:
        from control import actions

        async with store_of(args) as store:
            rows = [asdict(row) for row in await actions.recover(store, settings_of(args).api, OPERATOR,
                                                                 args.integration, moment(args.since))]
    show(args, {"scheduled": rows}, f"{len(rows)} failed deliveries scheduled again")
    if args.wait and rows:
        ids = {row["id"] for row in rows}
        await follow_settling(lambda: _still_pending(args, remote, args.integration, ids), len(ids))
    return 0


async def _still_pending(args: argparse.Namespace, remote: ApiClient | None, integration: int, ids: set[int]) -> int:
    """How many of ``ids`` are still pending (through the API: among the integration's newest 500 pending)."""
    if remote is not None:
        page = await remote.call("GET", "/v1/deliveries", params={"integration_id": integration,
                                                                  "status": "pending", "limit": 500})
        return len(ids & {row["id"] for row in page["items"]})
    async with store_of(args) as store:
        return await store.pending_among(sorted(ids))


async def cmd_replay(args: argparse.Namespace) -> int:
    """Start a replay job (a running publisher carries it out); ``--wait`` follows it to its end."""
    from publisher.jobs.replay import job_summary

    since = moment(args.since) if args.since else None
    job: Any
    if remote := api_of(args):
        job = _job(await remote.call("POST", f"/v1/integrations/{args.integration}/replay",
                                     {"offset": args.offset, "since": since and since.isoformat()}))
    else:
        from control import actions

        async with store_of(args) as store:
            job = await actions.start_replay(store, settings_of(args).api, OPERATOR, args.integration,
                                             offset=args.offset, since=since)
    show(args, _plain(job), f"{job_summary(job)}\n(a running publisher carries it out; "
                            f"follow it with: walhook replay-jobs show {job.id})")
    if args.wait:
        job = await follow(lambda: _read_job(args, remote, job.id), job_summary)
    return 0 if job.state in ("running", "done") else 1


def _job(data: dict[str, Any]) -> SimpleNamespace:
    """A replay job as the API returned it, with the attributes the store's ``ReplayJob`` has."""
    return SimpleNamespace(**{**data, "since": parse_time(data["since"]) if data.get("since") else None,
                              "finished": data["state"] != "running"})


def _plain(job: Any) -> dict[str, Any]:
    return vars(job) if isinstance(job, SimpleNamespace) else asdict(job)


async def _read_job(args: argparse.Namespace, remote: ApiClient | None, job_id: int) -> Any:
    if remote is not None:
        return _job(await remote.call("GET", f"/v1/replay-jobs/{job_id}"))
    async with store_of(args) as store:
        return await store.replay_job(None, job_id)


async def cmd_jobs_list(args: argparse.Namespace) -> int:
    if remote := api_of(args):
        jobs: list[Any] = await remote.call("GET", "/v1/replay-jobs", params={
            "integration_id": args.integration, "state": args.state, "limit": args.limit})
    else:
        async with store_of(args) as store:
            jobs = await store.replay_jobs(None, args.integration, args.state, args.limit)
    table(args, jobs, [("id", 6), ("integration_id", 15), ("state", 10), ("reason", 10), ("scanned", 9),
                       ("scheduled", 10), ("created_at", 34)])
    return 0


async def cmd_jobs_show(args: argparse.Namespace) -> int:
    from publisher.jobs.replay import job_summary

    job = await _read_job(args, api_of(args), args.job)
    show(args, _plain(job), job_summary(job))
    return 0


async def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    if remote := api_of(args):
        job: Any = _job(await remote.call("POST", f"/v1/replay-jobs/{args.job}/cancel"))
    else:
        from control import actions

        async with store_of(args) as store:
            job = await actions.cancel_replay(store, OPERATOR, args.job)
    show(args, _plain(job), f"replay job {job.id}: " + ("cancel requested" if not job.finished else job.state))
    return 0


async def cmd_send_sample(args: argparse.Namespace) -> int:
    from control.sample import send_sample
    from publisher.sending.sender import WebhookSender
    from publisher.sending.ssrf import DestinationPolicy

    settings = settings_of(args)
    entity = next((e for e in settings.entities if e.entity_key == args.entity_key), None)
    if entity is None:
        keys = ", ".join(e.entity_key for e in settings.entities) or "none configured"
        raise WalhookError(f"no [[entities]] entry with entity_key {args.entity_key!r} (known: {keys})")
    policy = DestinationPolicy.from_strings(settings.publisher.allowed_networks)
    async with store_of(args) as store, WebhookSender.of(settings.publisher, policy) as sender:
        result = await send_sample(store, sender, args.integration, entity, args.operation,
                                   _properties(args.new, "--new"), _properties(args.old, "--old"))
    data = {"status": result.status, "headers": result.headers, "body": result.body, "error": result.error,
            "webhook_id": result.webhook_id, "duration_ms": result.duration_ms, "subscribed": result.subscribed}
    verdict = "subscribed" if result.subscribed else "not subscribed (the integration would not receive it)"
    show(args, data, f"{result.webhook_id} ({verdict}): " + (
        f"HTTP {result.status} in {result.duration_ms:.0f} ms\n{result.body}" if result.status else f"{result.error}"))
    return 0 if result.succeeded else 1


def _properties(items: list[str], option: str) -> dict[str, object] | None:
    """``NAME=VALUE`` options; VALUE is JSON when it parses as JSON (``5``, ``true``, ``null``), text otherwise."""
    found: dict[str, object] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise WalhookError(f"{option} {item!r}: use NAME=VALUE")
        try:
            found[name.strip()] = orjson.loads(value)
        except orjson.JSONDecodeError:
            found[name.strip()] = value
    return found or None


def register(command: Command, group: Group) -> None:
    deliveries = group("deliveries", "the webhook jobs: deliveries and their attempts")
    listed = command("list", cmd_deliveries_list, "latest deliveries, newest first", deliveries)
    listed.add_argument("--integration", type=int)
    listed.add_argument("--status", choices=["pending", "succeeded", "failed"])
    listed.add_argument("--limit", type=int, default=50)
    command("show", cmd_deliveries_show, "a delivery's attempts", deliveries).add_argument("delivery", type=int)
    command("redeliver", cmd_redeliver, "attempt one delivery once more").add_argument("delivery", type=int)
    recover = command("recover", cmd_recover, "attempt an integration's failed deliveries once more")
    recover.add_argument("--integration", type=int, required=True)
    recover.add_argument("--since", required=True, help="ISO 8601 time; failed since then")
    recover.add_argument("--wait", action="store_true", help="follow the deliveries until each has settled")
    replay = command("replay", cmd_replay, "start a replay job: deliver an integration's events again from Kafka")
    replay.add_argument("--integration", type=int, required=True)
    start = replay.add_mutually_exclusive_group(required=True)
    start.add_argument("--offset", type=int, help="from this offset in every partition")
    start.add_argument("--since", help="from this ISO 8601 time")
    replay.add_argument("--wait", action="store_true", help="follow the job until it ends")
    jobs = group("replay-jobs", "replay jobs: list, show, cancel")
    listing = command("list", cmd_jobs_list, "replay jobs, newest first", jobs)
    listing.add_argument("--integration", type=int)
    listing.add_argument("--state", choices=["running", "done", "failed", "cancelled"])
    listing.add_argument("--limit", type=int, default=50)
    command("show", cmd_jobs_show, "one replay job", jobs).add_argument("job", type=int)
    command("cancel", cmd_jobs_cancel, "cancel a running replay job", jobs).add_argument("job", type=int)
    sample = command("send-sample", cmd_send_sample, "send a signed example event to one integration")
    sample.add_argument("--integration", type=int, required=True)
    sample.add_argument("--entity-key", required=True)
    sample.add_argument("--operation", choices=["created", "updated", "deleted", "read"], default="created")
    for option, row in (("--new", "new row"), ("--old", "old row")):
        sample.add_argument(option, action="append", default=[], metavar="NAME=VALUE",
                            help=f"set a property of the example's {row}, e.g. status=approved (repeatable)")
