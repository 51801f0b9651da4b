"""The ``walhook`` command line: one subcommand per process or operator task."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import orjson
import uvloop

from models.errors import WalhookError
from models.events import parse_time
from walhook import __version__
from walhook.config import Settings, load_settings

Handler = Callable[[argparse.Namespace], Awaitable[int]]


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set ``stop``: every loop then finishes what it must and exits."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.config) if args.config else None)


async def cmd_cdc(args: argparse.Namespace) -> int:
    from cdc.metrics import MetricsServer
    from cdc.pipeline import CaptureStats, run_capture

    settings = _settings(args)
    settings.require("source", "kafka")
    if not settings.entities:
        raise WalhookError("no [[entities]] configured: nothing to capture")
    stop = asyncio.Event()
    stop_on_signals(stop)
    assert settings.source is not None and settings.kafka is not None
    stats = CaptureStats()
    if settings.source.metrics_address is None:
        await run_capture(settings.source, settings.kafka, settings.entities, stop, stats=stats)
        return 0
    async with MetricsServer(stats, settings.source, settings.source.metrics_address):
        await run_capture(settings.source, settings.kafka, settings.entities, stop, stats=stats)
    return 0


async def cmd_publisher(args: argparse.Namespace) -> int:
    from publisher.sender import WebhookSender
    from publisher.service import Publisher
    from publisher.ssrf import DestinationPolicy
    from publisher.store import Store

    settings = _settings(args)
    settings.require("kafka", "store")
    stop = asyncio.Event()
    stop_on_signals(stop)
    assert settings.store is not None and settings.kafka is not None
    policy = DestinationPolicy.from_strings(settings.publisher.allowed_networks)
    async with Store(settings.store.dsn, settings.store.schema_name) as store, \
            WebhookSender(settings.publisher.request_timeout, policy=policy) as sender:
        await Publisher(settings.kafka, settings.publisher, store, sender).run(stop)
    return 0


async def cmd_orgs_add(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        secret = await store.add_organization(args.organization, args.secret)
    _print(args, {"organization": args.organization, "secret": secret},
           f"created organization {args.organization}\nsigning secret (store it now): {secret}")
    return 0


async def cmd_integrations_add(args: argparse.Namespace) -> int:
    from publisher.matching import parse_subscription
    from publisher.ssrf import DestinationPolicy

    for text in args.events:  # refused before anything is created, the organization included
        parse_subscription(text)
    headers = _headers(args.header)
    policy = DestinationPolicy.from_strings(_settings(args).publisher.allowed_networks)
    await policy.check_destination(args.url)  # refused now with a reason, not at the first delivery
    async with _store(args) as store:
        if not await store.organization_exists(args.org):
            secret = await store.add_organization(args.org, args.secret)
            print(f"created organization {args.org}; signing secret (store it now): {secret}", file=sys.stderr)
        existing = [i.id for i in await store.integrations_of(args.org) if i.url == args.url]
        if existing and args.exists_ok:
            print(f"integration {existing[0]} for {args.org} already sends to {args.url}; left as it is")
            return 0
        integration_id = await store.add_integration(
            args.org, args.url, args.events, args.name or "", environment=args.environment, ordering=args.ordering,
            batch_size=args.batch_size, rate_limit=args.rate_limit, headers=headers)
    _print(args, {"id": integration_id, "organization": args.org, "url": args.url, "events": args.events},
           f"created integration {integration_id} for {args.org}: {args.url} <- {', '.join(args.events)}")
    return 0


def _headers(items: Sequence[str]) -> dict[str, str]:
    """``--header NAME:VALUE`` options as a dict; a malformed one is named."""
    headers = {}
    for item in items:
        name, colon, value = item.partition(":")
        if not colon or not name.strip():
            raise WalhookError(f"--header {item!r}: use NAME:VALUE")
        headers[name.strip()] = value.strip()
    return headers


async def cmd_integrations_list(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        integrations = [integration.describe() for integration in await store.integrations_of(args.org)]
    if args.json:
        print(orjson.dumps(integrations).decode())
        return 0
    print(f"{'ID':>4}  {'ORGANIZATION':<16} {'URL':<40} EVENTS")
    for item in integrations:
        print(f"{item['id']:>4}  {item['organization']:<16} {item['url']:<40} {', '.join(item['events'])}")
    return 0


async def cmd_orgs_list(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        rows = await store.organizations()
    _table(args, rows, [("id", 24), ("created_at", 32)])
    return 0


async def cmd_orgs_delete(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        await store.delete_organization(args.organization)
    _print(args, {"deleted": args.organization}, f"deleted organization {args.organization} and all its data")
    return 0


async def cmd_keys_add(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        row, key = await store.add_api_key(args.org, args.name)
    _print(args, {**row, "key": key}, f"API key {row['id']} for {args.org} (store it now; shown once): {key}")
    return 0


async def cmd_keys_list(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        rows = await store.api_keys(args.org)
    _table(args, rows, [("id", 6), ("name", 20), ("prefix", 14), ("last_used_at", 34), ("revoked_at", 34)])
    return 0


async def cmd_keys_revoke(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        await store.revoke_api_key(args.org, args.key)
    _print(args, {"revoked": args.key}, f"revoked API key {args.key}")
    return 0


async def cmd_integrations_state(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        integration = await store.integration(args.integration)
        if args.action == "delete":
            await store.delete_integration(integration.organization_id, integration.id)
        else:
            await store.set_enabled(integration.id, args.action == "enable", "disabled by an operator")
    _print(args, {"integration": args.integration, "action": args.action},
           f"integration {args.integration}: {args.action}d")
    return 0


def _table(args: argparse.Namespace, rows: list[dict[str, object]], columns: list[tuple[str, int]]) -> None:
    if args.json:
        print(orjson.dumps(rows, default=str).decode())
        return
    print(" ".join(f"{name.upper():<{width}}" for name, width in columns).rstrip())
    for row in rows:
        print(" ".join(f"{row[name] if row[name] is not None else '-'!s:<{width}}" for name, width in columns).rstrip())


async def cmd_orgs_rotate(args: argparse.Namespace) -> int:
    from datetime import timedelta

    async with _store(args) as store:
        secret = await store.rotate_secret(args.organization, args.integration,
                                           timedelta(hours=args.overlap_hours))
    _print(args, {"organization": args.organization, "integration": args.integration, "secret": secret},
           f"new signing secret (store it now): {secret}\nthe previous one keeps signing for {args.overlap_hours:g} h")
    return 0


async def cmd_deliveries_list(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        rows = await store.deliveries(args.integration, args.status, args.limit)
    _table(args, rows, [("id", 6), ("integration_id", 15), ("status", 10), ("attempts", 9), ("trigger", 10),
                        ("webhook_id", 40)])
    return 0


async def cmd_deliveries_show(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        attempts = await store.attempts_of(args.delivery)
    if args.json:
        print(orjson.dumps(attempts, default=lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes)
                           else str(v)).decode())
        return 0
    for attempt in attempts:
        outcome = attempt["response_status"] or attempt["error"]
        print(f"#{attempt['number']} {attempt['started_at']:%Y-%m-%d %H:%M:%S} {attempt['trigger']:<9} "
              f"{attempt['url']} -> {outcome} in {attempt['duration_ms']:.0f} ms")
    return 0


async def cmd_redeliver(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        row = await store.redeliver(args.delivery)
    _print(args, row, f"delivery {row['id']} ({row['webhook_id']}) scheduled for one more attempt")
    return 0


async def cmd_recover(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        rows = await store.recover(args.integration, _moment(args.since))
    _print(args, {"scheduled": rows}, f"{len(rows)} failed deliveries scheduled again")
    return 0


async def cmd_replay(args: argparse.Namespace) -> int:
    from publisher.recovery import ReplayStart, replay

    settings = _settings(args)
    settings.require("kafka", "store")
    assert settings.kafka is not None
    start = ReplayStart(offset=args.offset, since=_moment(args.since) if args.since else None)
    async with _store(args) as store:
        rows = await replay(store, settings.kafka, await store.integration(args.integration), start)
    _print(args, {"scheduled": rows}, f"{len(rows)} events scheduled for integration {args.integration}")
    return 0


async def cmd_send_sample(args: argparse.Namespace) -> int:
    from publisher.sample import send_sample
    from publisher.sender import WebhookSender
    from publisher.ssrf import DestinationPolicy

    settings = _settings(args)
    entity = next((e for e in settings.entities if e.entity_key == args.entity_key), None)
    if entity is None:
        keys = ", ".join(e.entity_key for e in settings.entities) or "none configured"
        raise WalhookError(f"no [[entities]] entry with entity_key {args.entity_key!r} (known: {keys})")
    policy = DestinationPolicy.from_strings(settings.publisher.allowed_networks)
    async with _store(args) as store, WebhookSender(settings.publisher.request_timeout, policy=policy) as sender:
        result = await send_sample(store, sender, args.integration, entity, args.operation)
    data = {"status": result.status, "headers": result.headers, "body": result.body, "error": result.error,
            "webhook_id": result.webhook_id, "duration_ms": result.duration_ms}
    _print(args, data, f"{result.webhook_id}: " + (f"HTTP {result.status} in {result.duration_ms:.0f} ms\n"
                                                    f"{result.body}" if result.status else f"{result.error}"))
    return 0 if result.succeeded else 1


def _moment(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise WalhookError(str(exc)) from exc


def _store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from publisher.store import Store

    settings = _settings(args)
    settings.require("store")
    assert settings.store is not None
    return Store(settings.store.dsn, settings.store.schema_name)


def _print(args: argparse.Namespace, data: Mapping[str, object], text: str) -> None:
    print(orjson.dumps(data).decode() if getattr(args, "json", False) else text)


async def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from publisher.api.app import create_app

    settings = _settings(args)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=settings.api.host, port=settings.api.port,
                                           log_level="warning", access_log=False))
    await server.serve()
    return 0


async def cmd_stack_up(args: argparse.Namespace) -> int:
    from walhook.stack import LocalStack

    stack = LocalStack(Path(args.dir)).start()
    try:
        print(f"postgres: {stack.dsn}\nkafka:    {stack.bootstrap_servers}\n(Ctrl-C stops both)", flush=True)
        stop = asyncio.Event()
        stop_on_signals(stop)
        await stop.wait()
    finally:
        stack.stop()
    return 0


async def cmd_receiver(args: argparse.Namespace) -> int:
    from walhook.receiver import VerifyingReceiver

    secrets = dict(item.split("=", 1) for item in args.secret)
    receiver = VerifyingReceiver(secrets, host=args.host, port=args.port, on_webhook=lambda hook: print(
        f"verified {hook.organization} {hook.event['operationType']} {hook.event['entityPath']}", flush=True))
    async with receiver:
        print(f"listening on http://{args.host}:{receiver.port}/hooks/<organization>", flush=True)
        stop = asyncio.Event()
        stop_on_signals(stop)
        await stop.wait()
    return 0


async def cmd_demo(args: argparse.Namespace) -> int:
    from walhook.demo import run_demo

    return await run_demo(seconds=args.seconds, directory=Path(args.dir) if args.dir else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="walhook", description="Postgres changes to signed webhooks.")
    parser.add_argument("--version", action="version", version=f"walhook {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    parser.add_argument("--event-loop", choices=["uvloop", "asyncio"], default="uvloop",
                        help="uvloop (default: less overhead per socket operation) or asyncio's own loop")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str, parent: argparse._SubParsersAction = commands,
                config: bool = True) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        if config:
            sub.add_argument("--config", help="TOML file; WALHOOK_* environment variables override it")
            sub.add_argument("--json", action="store_true", help="machine-readable output")
        return sub

    command("cdc", cmd_cdc, "capture row changes from the replication slot into Kafka")
    command("publisher", cmd_publisher, "deliver events from Kafka as signed webhooks")
    command("api", cmd_api, "serve the management API ([api] host and port)")
    orgs = commands.add_parser("orgs", help="manage organizations").add_subparsers(dest="action", required=True)
    add_org = command("add", cmd_orgs_add, "create an organization and its signing secret", orgs)
    add_org.add_argument("organization")
    add_org.add_argument("--secret", help="use this whsec_ secret instead of generating one")
    command("list", cmd_orgs_list, "list organizations", orgs)
    command("delete", cmd_orgs_delete, "delete an organization and everything of it", orgs).add_argument(
        "organization")
    keys = commands.add_parser("keys", help="an organization's API keys").add_subparsers(dest="action", required=True)
    for name, handler, text in (("add", cmd_keys_add, "create an API key (shown once)"),
                                ("list", cmd_keys_list, "list API keys (prefix and metadata only)"),
                                ("revoke", cmd_keys_revoke, "revoke an API key")):
        sub = command(name, handler, text, keys)
        sub.add_argument("--org", required=True)
        if name == "add":
            sub.add_argument("--name", required=True)
        if name == "revoke":
            sub.add_argument("key", type=int)
    rotate = command("rotate-secret", cmd_orgs_rotate, "rotate an organization's (or an integration's) secret", orgs)
    rotate.add_argument("organization")
    rotate.add_argument("--integration", type=int, help="rotate this integration's own secret instead")
    rotate.add_argument("--overlap-hours", type=float, default=24.0, help="how long the old secret keeps signing")
    deliveries = commands.add_parser("deliveries", help="the webhook jobs: deliveries and their attempts"
                                     ).add_subparsers(dest="action", required=True)
    listed = command("list", cmd_deliveries_list, "latest deliveries, newest first", deliveries)
    listed.add_argument("--integration", type=int)
    listed.add_argument("--status", choices=["pending", "succeeded", "failed"])
    listed.add_argument("--limit", type=int, default=50)
    command("show", cmd_deliveries_show, "a delivery's attempts", deliveries).add_argument("delivery", type=int)
    command("redeliver", cmd_redeliver, "attempt one delivery once more").add_argument("delivery", type=int)
    sample = command("send-sample", cmd_send_sample, "send a signed example event to one integration")
    sample.add_argument("--integration", type=int, required=True)
    sample.add_argument("--entity-key", required=True)
    sample.add_argument("--operation", choices=["created", "updated", "deleted"], default="created")
    recover = command("recover", cmd_recover, "attempt an integration's failed deliveries once more")
    recover.add_argument("--integration", type=int, required=True)
    recover.add_argument("--since", required=True, help="ISO 8601 time; failed since then")
    replay = command("replay", cmd_replay, "deliver an integration's events again from Kafka")
    replay.add_argument("--integration", type=int, required=True)
    start = replay.add_mutually_exclusive_group(required=True)
    start.add_argument("--offset", type=int, help="from this offset in every partition")
    start.add_argument("--since", help="from this ISO 8601 time")
    integrations = commands.add_parser("integrations", help="manage webhook integrations").add_subparsers(
        dest="action", required=True)
    add = command("add", cmd_integrations_add, "subscribe a URL to events of an organization", integrations)
    add.add_argument("--org", required=True)
    add.add_argument("--url", required=True)
    add.add_argument("--events", required=True, action="append",
                     help="ENTITY_KEY:OPS, e.g. flows/comments:created,updated (repeatable; * wildcards)")
    add.add_argument("--name")
    add.add_argument("--secret", help="signing secret for the organization if this creates it (default: generated)")
    add.add_argument("--environment", help="only events of this [source] environment (default: any)")
    add.add_argument("--ordering", choices=["entity", "none"], default="entity",
                     help="entity: a change waits while an earlier one of its entity is retried (default)")
    add.add_argument("--batch-size", type=int, default=1, help="events per request, 1-1000 (default 1)")
    add.add_argument("--rate-limit", type=float, help="requests per second at most")
    add.add_argument("--header", action="append", default=[], help="NAME:VALUE sent with every request")
    add.add_argument("--exists-ok", action="store_true", help="do nothing if the organization already sends to URL")
    for action in ("enable", "disable", "delete"):
        command(action, cmd_integrations_state, f"{action} an integration", integrations).add_argument(
            "integration", type=int)
    listing = command("list", cmd_integrations_list, "list enabled integrations", integrations)
    listing.add_argument("--org")
    stack = commands.add_parser("stack", help="local Postgres + Kafka").add_subparsers(dest="action", required=True)
    command("up", cmd_stack_up, "start Postgres and the Kafka broker until Ctrl-C", stack,
            config=False).add_argument("--dir", required=True)
    receiver = command("receiver", cmd_receiver, "run a webhook receiver that verifies signatures", config=False)
    receiver.add_argument("--host", default="127.0.0.1")
    receiver.add_argument("--port", type=int, default=8000)
    receiver.add_argument("--secret", action="append", default=[], help="ORGANIZATION=whsec_... (repeatable)")
    demo = command("demo", cmd_demo, "run the whole pipeline on a local stack and show verified webhooks",
                   config=False)
    demo.add_argument("--seconds", type=float, default=0, help="stop after N seconds (default: until Ctrl-C)")
    demo.add_argument("--dir", help="keep the stack's data here (default: a temporary directory)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        if args.event_loop == "uvloop":
            return uvloop.run(args.handler(args))
        return asyncio.run(args.handler(args))
    except WalhookError as exc:
        print(f"walhook: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
