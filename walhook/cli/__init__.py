"""The ``walhook`` command line: one subcommand per process or operator task, registered by area.

* ``run``: the processes (cdc, publisher, api);
* ``status``: the slot and its failover readiness;
* ``secrets``: the keys that encrypt signing secrets at rest;
* ``migrate``: the store's schema, as a deployment step;
* ``admin``: organizations, API keys, secrets, integrations;
* ``deliveries``: the webhook jobs, recovery and replay jobs, samples;
* ``backfill``: backfills of existing rows;
* ``dead_letters``: what the capture and the publisher set aside;
* ``dev``: the local stack, a verifying receiver, the demo.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

import uvloop

from models.errors import WalhookError
from models.logs import FORMATS, configure_logging, json_lines
from walhook import __version__
from walhook.cli import admin, backfill, dead_letters, deliveries, dev, init, migrate, run, secrets, status
from walhook.cli.common import Handler


def global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every command takes, before or after its name. On a subcommand they default to
    nothing (``SUPPRESS``), so that a value given before the subcommand is not overwritten."""
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--log-level", default=default("INFO"), help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    parser.add_argument("--log-format", choices=FORMATS, default=default("human"),
                        help="human (default) or json: one JSON object per line with time, level, logger, message "
                        "and the ids at hand (organization, integration, delivery, event, lsn)")
    parser.add_argument("--event-loop", choices=["uvloop", "asyncio"], default=default("uvloop"),
                        help="uvloop (default: less overhead per socket operation) or asyncio's own loop")
    parser.add_argument("--config", default=default(None), help="TOML file (default: $WALHOOK_CONFIG, then "
                        "./walhook.toml); WALHOOK_* environment variables override it")
    parser.add_argument("--api", default=default(None), metavar="URL", help="work through a running management "
                        "API instead of the store (default: $WALHOOK_API)")
    parser.add_argument("--token", default=default(None), help="the API's admin token or an organization's key "
                        "(default: $WALHOOK_TOKEN)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="walhook", description="Postgres changes to signed webhooks.")
    parser.add_argument("--version", action="version", version=f"walhook {__version__}")
    global_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str, parent: argparse._SubParsersAction = commands,
                config: bool = True) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        global_options(sub, defaults=False)
        if config:
            sub.add_argument("--json", action="store_true", help="machine-readable output")
        return sub

    def group(name: str, help_text: str) -> argparse._SubParsersAction:
        parent = commands.add_parser(name, help=help_text)
        global_options(parent, defaults=False)
        return parent.add_subparsers(dest="action", required=True)

    run.register(command)
    status.register(command)
    admin.register(command, group)
    deliveries.register(command, group)
    backfill.register(command, group)
    dead_letters.register(command, group)
    dev.register(command, group)
    secrets.register(command, group)
    init.register(command)
    migrate.register(command)
    return parser


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.log_level.upper() not in _LEVELS:
        print(f"walhook: error: --log-level {args.log_level!r}: use one of {', '.join(_LEVELS)}", file=sys.stderr)
        return 2
    configure_logging(args.log_level.upper(), args.log_format)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        if args.event_loop == "uvloop":
            return uvloop.run(args.handler(args))
        return asyncio.run(args.handler(args))
    except WalhookError as exc:
        if json_lines():  # a log collector reads every stderr line as JSON: the last one too
            logging.getLogger("walhook").error("%s", exc)
        else:
            print(f"walhook: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
