"""``walhook init``: a starter ``walhook.toml`` from what a database's catalog says about its tables.

``read_tables`` is the only I/O (one catalog query); ``entity_for`` decides, per table, whether
walhook can capture it and how its rows become entities; ``starter_config`` writes the file,
every section with its defaults as comments (taken from the settings classes, so they cannot
drift from what walhook really does).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

import psycopg
from pydantic import BaseModel

from cdc.errors import SourceError
from cdc.identity import TableShape, choose_identity
from models.errors import ConfigError
from models.settings import (
    ApiSettings,
    BackfillSettings,
    KafkaSettings,
    PortalSettings,
    PublisherSettings,
    RetentionSettings,
    SourceSettings,
    StoreSettings,
)

# Common names, snake_case and the camelCase ORMs such as Prisma and TypeORM write, most usual first.
ORGANIZATION_COLUMNS = ("organization_id", "org_id", "tenant_id", "organisation_id", "organizationId", "orgId",
                        "tenantId", "organisationId", "account_id", "accountId", "workspace_id", "workspaceId")
CREATE_TIME_COLUMNS = ("created_at", "create_time", "inserted_at", "created", "createdAt", "insertedAt",
                       "created_on", "date_joined", "creation_date")
UPDATE_TIME_COLUMNS = ("updated_at", "update_time", "modified_at", "updated", "updatedAt", "last_update",
                       "modified", "modifiedAt", "updated_on", "last_modified", "lastModified")
# A column whose name says it holds a secret is left out of events (exclude_columns) by the starter: one of
# these words, or pairs of words, in its snake_case or camelCase name.
_SECRET_WORDS = {"password", "passwd", "secret", "secrets", "token", "tokens", "apikey", "salt", "otp", "totp"}
_SECRET_PAIRS = {("api", "key"), ("private", "key"), ("access", "key"), ("signing", "key")}
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_TIME_TYPES = {"timestamp with time zone", "timestamp without time zone"}
# What a path template accepts as a column name (see models.settings.template_columns).
_COLUMN_NAME = re.compile(r"^[^\W\d](?:[\w$ ]*[\w$])?$")

_TABLES = """
SELECT n.nspname, c.relname, c.relreplident,
       coalesce((SELECT array_agg(a.attname ORDER BY k.n) FROM pg_index i
                 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                 WHERE i.indrelid = c.oid AND i.indisprimary), '{}') AS primary_key,
       coalesce((SELECT array_agg(a.attname ORDER BY k.n) FROM pg_index i
                 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                 WHERE i.indrelid = c.oid AND i.indisreplident), '{}') AS identity_key,
       (SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
       (SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS types,
       coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.oid
                 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = 'v'), '{}') AS virtual_generated
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp%%'
  AND n.nspname <> %s
ORDER BY n.nspname, c.relname
"""


@dataclass(frozen=True)
class TableInfo:
    """What the catalog says about one table."""

    schema: str
    name: str
    replica_identity: str  # d(efault), n(othing), f(ull), i(ndex)
    primary_key: tuple[str, ...]
    identity_key: tuple[str, ...]
    columns: dict[str, str]  # name -> type
    virtual_generated: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def identity_plan(self) -> str:
        """What capture would do to the table's replica identity with the defaults (``cdc.identity``)."""
        shape = TableShape(self.qualified, self.replica_identity, bool(self.primary_key), self.virtual_generated)
        source_default = SourceSettings.model_fields["set_replica_identity_full"].default
        try:
            return choose_identity(shape, None, source_default).summary
        except SourceError as exc:
            return f"refused as it stands ({str(exc).split(': ', 1)[0]}); set replica_identity_full = true"


@dataclass(frozen=True)
class Entity:
    """An ``[[entities]]`` entry for a table walhook can capture."""

    table: str
    entity_key: str
    entity_path: str
    collection_path: str
    organization_column: str | None
    create_time_column: str | None
    update_time_column: str | None
    exclude_columns: tuple[str, ...] = ()


def read_tables(dsn: str, store_schema: str = "walhook") -> list[TableInfo]:
    """Every user table of the database (partitions only through their root), walhook's own left out."""
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            rows = conn.execute(_TABLES, [store_schema]).fetchall()
    except psycopg.Error as exc:
        raise ConfigError(f"cannot read the tables of {dsn}: {str(exc).strip().splitlines()[0]}") from exc
    return [TableInfo(schema, name, identity, tuple(pk), tuple(ik), dict(zip(columns, types, strict=True)),
                      tuple(virtual)) for schema, name, identity, pk, ik, columns, types, virtual in rows]


def refusal(table: TableInfo) -> str | None:
    """Why walhook cannot capture ``table``, or None."""
    for part in (table.schema, table.name):
        if '"' in part or "." in part:
            return f"its name {part!r} holds a quote or a dot, which [[entities]] table cannot name"
    key = key_columns(table)
    if not key:
        identity = {"n": "REPLICA IDENTITY NOTHING", "f": "REPLICA IDENTITY FULL"}.get(table.replica_identity,
                                                                                       "no replica identity index")
        return (f"no primary key and {identity}: walhook cannot name its rows "
                "(add a primary key, or REPLICA IDENTITY USING INDEX on a unique index)")
    bad = [column for column in key if not _COLUMN_NAME.match(column)]
    if bad:
        return f"key column {bad[0]!r} cannot be named in an entity_path template"
    return None


def key_columns(table: TableInfo) -> tuple[str, ...]:
    """The columns that name a row: the primary key, else the replica identity index."""
    return table.primary_key or table.identity_key


def entity_for(table: TableInfo) -> Entity:
    """The starter mapping of a table ``refusal`` accepts."""
    organization = _first(table, ORGANIZATION_COLUMNS)
    key = [c for c in key_columns(table) if c != organization] or list(key_columns(table))
    collection = table.name if table.schema == "public" else f"{table.schema}/{table.name}"
    return Entity(table=table.qualified, entity_key=collection,
                  entity_path=collection + "".join(f"/{{{column}}}" for column in key), collection_path=collection,
                  organization_column=organization, create_time_column=_first(table, CREATE_TIME_COLUMNS, _TIME_TYPES),
                  update_time_column=_first(table, UPDATE_TIME_COLUMNS, _TIME_TYPES),
                  exclude_columns=secret_columns(table))


def secret_columns(table: TableInfo) -> tuple[str, ...]:
    """The columns whose names say they hold secrets (``password``, ``password_hash``, ``api_key``, ``token``...),
    key columns aside: the starter leaves them out of every event."""
    key = set(key_columns(table))
    return tuple(name for name in table.columns if name not in key and _looks_secret(name))


def _looks_secret(name: str) -> bool:
    words = [word.lower() for word in _WORD.findall(name)]
    return bool(_SECRET_WORDS.intersection(words)) or any(pair in _SECRET_PAIRS for pair in pairwise(words))


def _first(table: TableInfo, names: tuple[str, ...], types: set[str] | None = None) -> str | None:
    return next((name for name in names if name in table.columns
                 and (types is None or table.columns[name] in types)), None)


def choose(tables: list[TableInfo], names: list[str]) -> list[TableInfo]:
    """The tables named (``schema.table``, or ``table`` in public); an unknown name is an error listing the known."""
    by_name = {t.qualified: t for t in tables}
    chosen = []
    for name in names:
        qualified = name if "." in name else f"public.{name}"
        if qualified not in by_name:
            raise ConfigError(f"table {name!r} not found (the database has: {', '.join(by_name) or 'no tables'})")
        chosen.append(by_name[qualified])
    return chosen


def starter_config(dsn: str, bootstrap_servers: str, entities: list[Entity], store_dsn: str | None = None, *,
                   admin_token: str | None = None, allowed_networks: list[str] | None = None,
                   api_port: int | None = None) -> str:
    """The whole ``walhook.toml``: required keys set, every other key of every section as a commented default."""
    from models.secretbox import new_key

    api = {key: value for key, value in (("admin_token", admin_token), ("port", api_port)) if value is not None}
    # A fresh key, so that signing secrets are encrypted at rest from the first start. Keep it: without
    # it the stored secrets cannot be read. (In production, pass it as WALHOOK_STORE__SECRET_KEYS.)
    sections = [
        _section("source", SourceSettings, {"dsn": dsn}),
        _section("kafka", KafkaSettings, {"bootstrap_servers": bootstrap_servers}),
        _section("store", StoreSettings, {"dsn": store_dsn or dsn, "secret_keys": [new_key("k1")]}),
        _section("publisher", PublisherSettings, {"allowed_networks": allowed_networks} if allowed_networks else {}),
        _section("api", ApiSettings, api),
        _section("retention", RetentionSettings, {}),
        _section("portal", PortalSettings, {}),
        _section("backfill", BackfillSettings, {}),
    ]
    header = ("# Written by `walhook init`. Commented keys show their defaults; uncomment one to change it.\n"
              "# Any key can be overridden by WALHOOK_<SECTION>__<KEY> environment variables.\n"
              "# [store] secret_keys encrypts the signing secrets: keep the key (losing it loses them), and keep\n"
              "# this file private, or move the key to WALHOOK_STORE__SECRET_KEYS.\n")
    return header + "\n".join(sections) + "\n" + "\n".join(_entity(e) for e in entities)


def _section(name: str, model: type[BaseModel], values: Mapping[str, object]) -> str:
    lines = [f"[{name}]"]
    for field_name, field in model.model_fields.items():
        key = field.alias or field_name
        note = f"  # {field.description}" if field.description else ""
        if key in values:
            lines.append(f"{key} = {toml_value(values[key])}")
        elif field.is_required():
            lines.append(f"# {key} = (required){note}")
        else:
            default = field.get_default(call_default_factory=True)
            lines.append(f"# {key} = {'(none)' if default is None else toml_value(default)}{note}")
    return "\n".join(lines) + "\n"


def _entity(entity: Entity) -> str:
    lines = ["[[entities]]"]
    for key, value in vars(entity).items():
        if key == "exclude_columns":
            lines.append(f"exclude_columns = {toml_value(value)}  # their names say they hold secrets"
                         if value else "# exclude_columns = []")
        elif key == "organization_column" and value is None:
            lines.append("# organization_column = (none found: no integration receives this table's events)")
        else:
            lines.append(f"{key} = {toml_value(value)}" if value is not None else f"# {key} = (none)")
    lines += ["# entity_id = (the last column of entity_path)", '# property_names = "as_is"']
    return "\n".join(lines) + "\n"


def toml_value(value: object) -> str:
    """A Python value as TOML (strings, numbers, booleans, lists of them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) and value.is_integer() else str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
