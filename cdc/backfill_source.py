"""The source side of a backfill: is a table backfillable, and one chunk of its rows with the snapshot read.

A chunk is ``SELECT * ... WHERE key > cursor ORDER BY key LIMIT n`` in a REPEATABLE READ, READ ONLY
transaction whose snapshot (``pg_current_snapshot()``) comes back with the rows. Values come back
as the bytes of their text form, under the replication session's settings, so they convert
exactly as the stream's values do and a row's key compares equal to the key pgoutput sends.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.adapt import AdaptersMap, Loader
from psycopg.types.string import StrDumperUnknown

from cdc.errors import BackfillRefused
from cdc.transport import SESSION_OPTIONS
from cdc.watermark import Snapshot
from models.filters import Condition, FilterError, filter_columns, parse_filter
from models.settings import EntitySettings

_KEY_COLUMNS = """
WITH chosen AS (
    SELECT i.indrelid, i.indkey FROM pg_class c JOIN pg_index i ON i.indrelid = c.oid
    WHERE c.oid = to_regclass(%(t)s) AND (i.indisprimary OR (c.relreplident = 'i' AND i.indisreplident))
    ORDER BY (c.relreplident = 'i' AND i.indisreplident) DESC LIMIT 1)
SELECT a.attname FROM chosen CROSS JOIN LATERAL unnest(chosen.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
JOIN pg_attribute a ON a.attrelid = chosen.indrelid AND a.attnum = k.attnum ORDER BY k.n
"""


class _Raw(Loader):
    """Every column as the bytes of its text form, like pgoutput's tuples."""

    def load(self, data: Any) -> bytes:
        return bytes(data)


def _raw_adapters() -> AdaptersMap:
    adapters = AdaptersMap()
    adapters.register_loader(0, _Raw)  # the fallback loader, used for every type
    adapters.register_dumper(str, StrDumperUnknown)  # cursor values: Postgres infers each column's type
    return adapters


@dataclass(frozen=True)
class TablePlan:
    """What a backfill reads: the table, its key columns, and the filter's conditions."""

    table: str
    key_columns: tuple[str, ...]
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class ChunkRead:
    """One chunk as read: rows (bytes per column), column names and type oids, the snapshot, the cost."""

    rows: list[tuple[bytes | None, ...]]
    names: tuple[str, ...]
    type_oids: tuple[int, ...]
    snapshot: Snapshot
    seconds: float
    size_bytes: int


async def connect_reader(dsn: str) -> psycopg.AsyncConnection[Any]:
    """The backfill's own connection, with the replication session's output settings."""
    # No type adapters but these two: every value is read through the raw fallback loader.
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True, options=SESSION_OPTIONS,
                                                 client_encoding="utf8", context=_raw_adapters())


async def plan_table(conn: psycopg.AsyncConnection[Any], entity: EntitySettings, row_filter: str | None,
                     organization_id: str | None) -> TablePlan:
    """Check that ``entity``'s table can be backfilled with ``row_filter``; ``BackfillRefused`` says why not.

    ``conn`` is an ordinary connection (``cdc.source.connect_control``), not the reader's.
    """
    quoted = _quoted(entity.table)
    keys = tuple(name for (name,) in await (await conn.execute(_KEY_COLUMNS, {"t": quoted})).fetchall())
    if not keys:
        raise BackfillRefused(f"table {entity.table} has no primary key and no replica identity index: its rows "
                              "cannot be read in key order (add a primary key, or ALTER TABLE ... REPLICA IDENTITY "
                              "USING INDEX a unique index on NOT NULL columns)")
    conditions = _conditions(row_filter)
    # An excluded column is as unknown to a filter as a missing one, and never named: a filter on it
    # would tell, through the rows it reads, what the column holds.
    columns = [name for name in await _columns(conn, quoted) if name not in entity.exclude_columns]
    unknown = sorted(filter_columns(conditions) - set(columns))
    if unknown:
        raise BackfillRefused(f"filter names unknown column(s) {', '.join(unknown)} of {entity.table} "
                              f"(its columns: {', '.join(columns)})")
    if organization_id is not None and entity.organization_column is not None:
        conditions.append(Condition(entity.organization_column, "=", (organization_id,)))
    elif organization_id is not None and entity.organization != organization_id:
        raise BackfillRefused(f"table {entity.table} has no organization_column and its rows belong to "
                              f"{'no organization' if entity.organization is None else 'another organization'}: "
                              "none of them would reach this organization's integrations")
    return TablePlan(entity.table, keys, tuple(conditions))


def _conditions(row_filter: str | None) -> list[Condition]:
    try:
        return parse_filter(row_filter) if row_filter else []
    except FilterError as exc:
        raise BackfillRefused(str(exc)) from exc


async def _columns(conn: psycopg.AsyncConnection[Any], quoted: str) -> list[str]:
    cursor = await conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
                                "AND NOT attisdropped ORDER BY attnum", [quoted])
    return [name for (name,) in await cursor.fetchall()]


async def estimate_rows(conn: psycopg.AsyncConnection[Any], plan: TablePlan) -> int | None:
    """The planner's estimate of how many rows the backfill reads (None if it has none); ``conn`` is the reader's."""
    where, params = _where(plan, None)
    query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {} WHERE {}").format(_identifier(plan.table), where)
    row = await (await conn.execute(query, params)).fetchone()
    if row is None:
        return None
    rows = orjson.loads(row[0])[0]["Plan"].get("Plan Rows")
    return None if rows is None else int(rows)


async def last_key(conn: psycopg.AsyncConnection[Any], plan: TablePlan) -> list[str] | None:
    """The key of the last row the backfill would read now: it ends there, so rows inserted at the end of
    the key range while it runs (the stream sends those anyway) cannot keep it going forever."""
    where, params = _where(plan, None)
    keys = sql.SQL(", ").join(sql.Identifier(column) for column in plan.key_columns)
    descending = sql.SQL(", ").join(sql.SQL("{} DESC").format(sql.Identifier(column)) for column in plan.key_columns)
    row = await (await conn.execute(sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {} LIMIT 1").format(
        keys, _identifier(plan.table), where, descending), params)).fetchone()
    return None if row is None else [value.decode() for value in row]


async def read_chunk(conn: psycopg.AsyncConnection[Any], plan: TablePlan, cursor_key: Sequence[str] | None,
                     rows: int, statement_timeout: float, end_key: Sequence[str] | None = None) -> ChunkRead:
    """Up to ``rows`` rows after ``cursor_key`` and up to ``end_key`` in key order, with the snapshot they
    were read in. ``psycopg.errors.QueryCanceled`` when the query ran past ``statement_timeout``.
    """
    where, params = _where(plan, cursor_key, end_key)
    keys = sql.SQL(", ").join(sql.Identifier(column) for column in plan.key_columns)
    query = sql.SQL("SELECT * FROM {} WHERE {} ORDER BY {} LIMIT {}").format(
        _identifier(plan.table), where, keys, sql.SQL(str(int(rows))))
    started = time.monotonic()
    await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        await conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(
            sql.Literal(f"{int(statement_timeout * 1000)}ms")))
        snapshot = (await (await conn.execute("SELECT pg_current_snapshot()")).fetchone())[0]  # type: ignore[index]
        cursor = await conn.execute(query, params)
        found = await cursor.fetchall()
        description = cursor.description or []
    finally:
        await conn.execute("ROLLBACK")  # read only: nothing to keep
    size = sum(len(value) for row in found for value in row if value is not None)
    return ChunkRead(found, tuple(column.name for column in description),
                     tuple(column.type_code for column in description),
                     Snapshot.parse(snapshot.decode()),
                     time.monotonic() - started, size)


def _where(plan: TablePlan, cursor_key: Sequence[str] | None,
           end_key: Sequence[str] | None = None) -> tuple[sql.Composable, list[str]]:
    clauses: list[sql.Composable] = [sql.SQL("TRUE")]
    params: list[str] = []
    for condition in plan.conditions:
        clause, values = _clause(condition)
        clauses.append(clause)
        params.extend(values)
    keys = sql.SQL(", ").join(sql.Identifier(column) for column in plan.key_columns)
    for bound, op in ((cursor_key, ">"), (end_key, "<=")):
        if bound is not None:
            marks = sql.SQL(", ").join(sql.Placeholder() for _ in bound)
            clauses.append(sql.SQL("({}) " + op + " ({})").format(keys, marks))
            params.extend(bound)
    return sql.SQL(" AND ").join(clauses), params


def _clause(condition: Condition) -> tuple[sql.Composable, tuple[str, ...]]:
    column = sql.Identifier(condition.column)
    if condition.op in ("is null", "is not null"):
        return sql.SQL("{} " + condition.op.upper()).format(column), ()
    if condition.op == "in":
        marks = sql.SQL(", ").join(sql.Placeholder() for _ in condition.values)
        return sql.SQL("{} IN ({})").format(column, marks), condition.values
    return sql.SQL("{} " + condition.op + " {}").format(column, sql.Placeholder()), condition.values


def _quoted(table: str) -> str:
    schema, _, name = table.rpartition(".")
    return f'"{schema}"."{name}"'


def _identifier(table: str) -> sql.Identifier:
    schema, _, name = table.rpartition(".")
    return sql.Identifier(schema, name)
