"""``walhook init``: write a starter ``walhook.toml`` for tables of a database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.errors import WalhookError
from walhook.cli.common import Command
from walhook.config import check_config_text
from walhook.starter import TableInfo, choose, entity_for, read_tables, refusal, starter_config


async def cmd_init(args: argparse.Namespace) -> int:
    tables = read_tables(args.dsn, args.store_schema)
    if args.list:
        _list(tables)
        return 0
    chosen = _chosen(tables, args)
    refused = [(t, why) for t in chosen if (why := refusal(t))]
    for table, why in refused:
        print(f"walhook: skipping {table.qualified}: {why}", file=sys.stderr)
    entities = [entity_for(t) for t in chosen if not refusal(t)]
    if not entities:
        raise WalhookError("none of the chosen tables can be captured (see the reasons above)")
    output = Path(args.output)
    if output.exists() and not args.force:
        raise WalhookError(f"{output} exists; pass --force to overwrite it or --output to write elsewhere")
    text = starter_config(args.dsn, args.kafka, entities, args.store_dsn, admin_token=args.admin_token,
                          allowed_networks=args.allow_network, api_port=args.api_port)
    check_config_text(text, "the starter configuration")  # a bad flag is named now, not at the first start
    output.write_text(text)
    print(f"wrote {output} with {len(entities)} [[entities]]: {', '.join(e.table for e in entities)}")
    for entity in entities:
        if entity.exclude_columns:
            print(f"walhook: {entity.table}: left out of events, their names say they hold secrets: "
                  f"{', '.join(entity.exclude_columns)} (exclude_columns)", file=sys.stderr)
    orphans = [entity.table for entity in entities if entity.organization_column is None]
    if orphans:
        print(f"walhook: no organization column found in {', '.join(orphans)}: their events reach no integration "
              "until organization_column names one", file=sys.stderr)
    return 0


def _list(tables: list[TableInfo]) -> None:
    for table in tables:
        why = refusal(table)
        print(f"{table.qualified:<40} " + (f"cannot capture: {why}" if why else
                                           f"key ({', '.join(entity_for(table).entity_path.split('/')[1:])}); "
                                           f"replica identity {table.identity_plan()}"))


def _chosen(tables: list[TableInfo], args: argparse.Namespace) -> list[TableInfo]:
    """``--table`` names, ``--all``, or (on a terminal) the tables the user picks from a numbered list."""
    if args.all:
        return tables
    if args.table:
        return choose(tables, args.table)
    if not sys.stdin.isatty():
        raise WalhookError("name the tables to capture with --table T (repeatable) or --all; --list shows them")
    for number, table in enumerate(tables, 1):
        why = refusal(table)
        print(f"{number:>3}  {table.qualified}" + (f"  (cannot capture: {why})" if why else ""))
    answer = input("tables to capture (numbers or names, comma-separated; empty for all): ").strip()
    if not answer:
        return tables
    picked = [part.strip() for part in answer.split(",") if part.strip()]
    return [tables[int(p) - 1] if p.isdigit() and 0 < int(p) <= len(tables) else choose(tables, [p])[0]
            for p in picked]


def register(command: Command) -> None:
    init = command("init", cmd_init, "write a starter walhook.toml for tables of a database", config=False)
    init.add_argument("--dsn", required=True, help="the database to capture (URL or key=value form)")
    init.add_argument("--table", action="append", default=[], help="schema.table to capture (repeatable)")
    init.add_argument("--all", action="store_true", help="every table that can be captured")
    init.add_argument("--list", action="store_true", help="list the tables and whether they can be captured")
    init.add_argument("--kafka", default="127.0.0.1:9092", help="Kafka bootstrap servers (default 127.0.0.1:9092)")
    init.add_argument("--store-dsn", help="database for walhook's own tables (default: the same as --dsn)")
    init.add_argument("--store-schema", default="walhook", help="walhook's schema, left out of the list")
    init.add_argument("--output", default="walhook.toml", help="file to write (default ./walhook.toml)")
    init.add_argument("--admin-token", help="[api] admin_token: the bearer token of the API's admin routes")
    init.add_argument("--allow-network", action="append", default=[],
                      help="[publisher] allowed_networks entry, e.g. 127.0.0.1/32 for a receiver on this machine")
    init.add_argument("--api-port", type=int, help="[api] port (default 8080)")
    init.add_argument("--force", action="store_true", help="overwrite the file if it exists")
