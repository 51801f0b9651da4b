"""Managing tenants: organizations, their API keys and signing secrets, and integrations."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import timedelta

import orjson

from control.actor import OPERATOR
from models.errors import WalhookError
from publisher.routing.matching import SubscriptionItem
from walhook.cli.common import Command, Group, settings_of, show, store_of, table
from walhook.secret_input import add_secret_file_argument, read_secret


async def cmd_orgs_add(args: argparse.Namespace) -> int:
    async with store_of(args) as store:
        secret = await store.add_organization(args.organization, _given_secret(args))
    show(args, {"organization": args.organization, "secret": secret},
         f"created organization {args.organization}\nsigning secret (store it now): {secret}")
    return 0


async def cmd_orgs_list(args: argparse.Namespace) -> int:
    async with store_of(args) as store:
        rows = await store.organizations()
    table(args, rows, [("id", 24), ("created_at", 32)])
    return 0


async def cmd_orgs_delete(args: argparse.Namespace) -> int:
    async with store_of(args) as store:
        await store.delete_organization(args.organization)
    show(args, {"deleted": args.organization}, f"deleted organization {args.organization} and all its data")
    return 0


async def cmd_orgs_rotate(args: argparse.Namespace) -> int:
    from control import actions

    async with store_of(args) as store:
        secret = await actions.rotate_secret(store, OPERATOR, args.organization, args.integration,
                                             timedelta(hours=args.overlap_hours))
    show(args, {"organization": args.organization, "integration": args.integration, "secret": secret},
         f"new signing secret (store it now): {secret}\nthe previous one keeps signing for {args.overlap_hours:g} h")
    return 0


async def cmd_keys_add(args: argparse.Namespace) -> int:
    async with store_of(args) as store:
        row, key = await store.add_api_key(args.org, args.name)
    show(args, {**asdict(row), "key": key}, f"API key {row.id} for {args.org} (store it now; shown once): {key}")
    return 0


async def cmd_keys_list(args: argparse.Namespace) -> int:
    async with store_of(args) as store:
        rows = await store.api_keys(args.org)
    table(args, rows, [("id", 6), ("name", 20), ("prefix", 14), ("last_used_at", 34), ("revoked_at", 34)])
    return 0


async def cmd_keys_revoke(args: argparse.Namespace) -> int:
    async with store_of(args) as store:
        await store.revoke_api_key(args.org, args.key)
    show(args, {"revoked": args.key}, f"revoked API key {args.key}")
    return 0


def subscription_items(texts: Sequence[str]) -> list[SubscriptionItem]:
    """``--events`` values: ``KEY:OPS``, or a JSON object ``{"subscription": "KEY:OPS", "when": {...}}``."""
    items: list[SubscriptionItem] = []
    for text in texts:
        if not text.lstrip().startswith("{"):
            items.append(text)
            continue
        try:
            items.append(orjson.loads(text))
        except orjson.JSONDecodeError as exc:
            raise WalhookError(f"--events {text[:60]!r}: not JSON: {exc}") from exc
    return items


async def check_events(args: argparse.Namespace, texts: Sequence[str]) -> list[SubscriptionItem]:
    """Parse and check subscriptions as the API does: known entity keys, conditions that can hold."""
    from control.columns import checked_subscriptions

    settings = settings_of(args)
    items = subscription_items(texts)
    await checked_subscriptions(items, settings.entities, settings.source.dsn if settings.source is not None else None)
    return items


async def cmd_integrations_add(args: argparse.Namespace) -> int:
    from control import actions
    from publisher.sending.ssrf import DestinationPolicy

    events = await check_events(args, args.events)  # refused before anything is created, the organization included
    headers = _headers(args.header)
    given = _given_secret(args)
    policy = DestinationPolicy.from_strings(settings_of(args).publisher.allowed_networks)
    await policy.check_destination(args.url)  # refused now with a reason, not at the first delivery
    async with store_of(args) as store:
        if not await store.organization_exists(args.org):
            secret = await store.add_organization(args.org, given)
            print(f"created organization {args.org}; signing secret (store it now): {secret}", file=sys.stderr)
        existing = [i.id for i in await store.integrations_of(args.org) if i.url == args.url]
        if existing and args.exists_ok:
            print(f"integration {existing[0]} for {args.org} already sends to {args.url}; left as it is")
            return 0
        integration_id = await actions.create_integration(
            store, settings_of(args).api, OPERATOR, args.org, args.url, events, args.name or "",
            environment=args.environment,
            ordering=args.ordering, batch_size=args.batch_size, rate_limit=args.rate_limit, headers=headers,
            concurrency=args.concurrency, send_traceparent=args.send_traceparent)
    show(args, {"id": integration_id, "organization": args.org, "url": args.url, "events": events},
         f"created integration {integration_id} for {args.org}: {args.url} <- {', '.join(args.events)}")
    return 0


def _headers(items: Sequence[str]) -> dict[str, str]:
    """``--header NAME:VALUE`` options as a dict; a malformed or reserved one is named."""
    from publisher.sending.headers import custom_header_problem

    headers = {}
    for item in items:
        name, colon, value = item.partition(":")
        if not colon or not name.strip():
            raise WalhookError(f"--header {item!r}: use NAME:VALUE")
        if (problem := custom_header_problem(name.strip(), value.strip())) is not None:
            raise WalhookError(f"--header {item!r}: {problem}")
        headers[name.strip()] = value.strip()
    return headers


def _given_secret(args: argparse.Namespace) -> str | None:
    """The secret of ``--secret-file`` (checked), or None to have one generated."""
    return read_secret(args.secret_file) if args.secret_file else None


async def cmd_integrations_events(args: argparse.Namespace) -> int:
    from control import actions

    events = await check_events(args, args.events)
    async with store_of(args) as store:
        integration = await store.integration(args.integration)
        await actions.update_integration(store, settings_of(args).api, OPERATOR, integration.id, {"events": events})
    show(args, {"integration": integration.id, "events": events},
         f"integration {integration.id} <- {', '.join(_event_text(item) for item in events)}")
    return 0


def _event_text(item: SubscriptionItem) -> str:
    return item if isinstance(item, str) else orjson.dumps(item).decode()


async def cmd_integrations_list(args: argparse.Namespace) -> int:
    async with store_of(args) as store:
        filtered = await store.filtered_counts(args.org)
        integrations = [{**integration.describe(), "filtered": filtered.get(integration.id, 0)}
                        for integration in await store.integrations_of(args.org)]
    if args.json:
        print(orjson.dumps(integrations).decode())
        return 0
    print(f"{'ID':>4}  {'ORGANIZATION':<16} {'URL':<40} {'FILTERED':>9}  EVENTS")
    for item in integrations:
        print(f"{item['id']:>4}  {item['organization']:<16} {item['url']:<40} {item['filtered']:>9}  "
              f"{', '.join(_event_text(event) for event in item['events'])}")
    return 0


async def cmd_integrations_state(args: argparse.Namespace) -> int:
    async with store_of(args) as store:
        from control import actions

        job = None
        if args.action == "delete":
            integration = await store.integration(args.integration)
            await store.delete_integration(integration.organization_id, integration.id)
        elif args.action == "enable":
            job = await actions.enable(store, OPERATOR, args.integration, replay=not args.no_replay)
        else:
            await actions.disable(store, settings_of(args).kafka, OPERATOR, args.integration, "disabled by an operator")
    caught_up = f"; replay job {job.id} catches it up from {job.since:%Y-%m-%d %H:%M:%S} UTC" if job else ""
    show(args, {"integration": args.integration, "action": args.action, "replay_job": job and job.id},
         f"integration {args.integration}: {args.action}d{caught_up}")
    return 0


def register(command: Command, group: Group) -> None:
    orgs = group("orgs", "manage organizations")
    add_org = command("add", cmd_orgs_add, "create an organization and its signing secret", orgs)
    add_org.add_argument("organization")
    add_secret_file_argument(add_org, "read the whsec_ secret from FILE (- for standard input) instead of "
                                      "generating one")
    command("list", cmd_orgs_list, "list organizations", orgs)
    command("delete", cmd_orgs_delete, "delete an organization and everything of it", orgs).add_argument(
        "organization")
    rotate = command("rotate-secret", cmd_orgs_rotate, "rotate an organization's (or an integration's) secret", orgs)
    rotate.add_argument("organization")
    rotate.add_argument("--integration", type=int, help="rotate this integration's own secret instead")
    rotate.add_argument("--overlap-hours", type=float, default=24.0, help="how long the old secret keeps signing")
    keys = group("keys", "an organization's API keys")
    for name, handler, text in (("add", cmd_keys_add, "create an API key (shown once)"),
                                ("list", cmd_keys_list, "list API keys (prefix and metadata only)"),
                                ("revoke", cmd_keys_revoke, "revoke an API key")):
        sub = command(name, handler, text, keys)
        sub.add_argument("--org", required=True)
        if name == "add":
            sub.add_argument("--name", required=True)
        if name == "revoke":
            sub.add_argument("key", type=int)
    _register_integrations(command, group("integrations", "manage webhook integrations"))


EVENTS_HELP = ('ENTITY_KEY:OPS, e.g. flows/comments:created,updated (repeatable; * wildcards), or with conditions '
               '\'{"subscription": "flows/packets:updated", "when": {"property": "status", "to": "approved"}}\'')


def _register_integrations(command: Command, integrations: argparse._SubParsersAction) -> None:
    add = command("add", cmd_integrations_add, "subscribe a URL to events of an organization", integrations)
    add.add_argument("--org", required=True)
    add.add_argument("--url", required=True)
    add.add_argument("--events", required=True, action="append", help=EVENTS_HELP)
    add.add_argument("--name")
    add_secret_file_argument(add, "signing secret for the organization if this creates it, read from FILE "
                                  "(- for standard input; default: generated)")
    add.add_argument("--environment", help="only events of this [source] environment (default: any)")
    add.add_argument("--ordering", choices=["entity", "none"], default="entity",
                     help="entity: a change waits while an earlier one of its entity is retried (default)")
    add.add_argument("--batch-size", type=int, default=1, help="events per request, 1-1000 (default 1)")
    add.add_argument("--rate-limit", type=float, help="requests per second at most")
    add.add_argument("--concurrency", type=int, help="requests in flight at most (default: the publisher's "
                     "concurrency_per_integration)")
    add.add_argument("--header", action="append", default=[], help="NAME:VALUE sent with every request")
    add.add_argument("--send-traceparent", action="store_true", help="add the attempt's W3C traceparent header "
                     "to every request (with [tracing] on)")
    add.add_argument("--exists-ok", action="store_true", help="do nothing if the organization already sends to URL")
    for action in ("enable", "disable", "delete"):
        sub = command(action, cmd_integrations_state, f"{action} an integration", integrations)
        sub.add_argument("integration", type=int)
        if action == "enable":
            sub.add_argument("--no-replay", action="store_true", help="do not replay what happened while it was "
                             "disabled (by default a replay job catches it up, in entity order)")
    events = command("set-events", cmd_integrations_events, "replace an integration's subscriptions", integrations)
    events.add_argument("integration", type=int)
    events.add_argument("--events", required=True, action="append", help=EVENTS_HELP)
    listing = command("list", cmd_integrations_list, "list enabled integrations (FILTERED: events their conditions "
                      "filtered out)", integrations)
    listing.add_argument("--org")
