"""The workload: row changes through plain SQL, and the database-side record of what committed.

Three captured tables, rows of two organizations (inserted under acme for odd ids, globex for even
ids; a few updates move a row to the other organization). Every row carries ``version``, a per-entity
number the writer increments on each insert or update and never reuses (not even after a rollback), so
a change is identified by (table, id, version, operation); a delete carries the version of the row it
removed. A move is recorded as what walhook must make of it: a delete of the old version under the old
organization and a create of the new version under the new one. Transactions hold 1-20 changes; about
one in ten is rolled back; a few are large; notes carry TOAST-sized bodies, sometimes rewritten, mostly
left unchanged (a move leaves the body alone, so the created event must carry the unchanged TOAST).

A change enters the record only after COMMIT returned. When COMMIT itself fails (the server went away),
the transaction's row in ``chaos_commits`` (written in the same transaction) says whether it committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from dataclasses import dataclass, field

import psycopg

ORGANIZATIONS = ("acme", "globex")
ROLLBACK_SHARE = 0.1
MAX_TRANSACTION = 20
TOAST_SHARE = 0.1  # of note inserts and updates: a new body of TOAST_BYTES
TOAST_BYTES = (4_000, 40_000)
MOVE_SHARE = 0.04  # of changes to an existing row: move it to the other organization


@dataclass(frozen=True)
class Table:
    """A captured table and how walhook maps it to entities."""

    name: str
    entity_key: str
    extra_columns: str = ""

    def entity_config(self) -> str:
        return (f'\n[[entities]]\ntable = "public.{self.name}"\nentity_key = "{self.entity_key}"\n'
                f'entity_path = "{self.name}/{{id}}"\ncollection_path = "{self.name}"\norganization_column = "org"\n')

    def ddl(self) -> str:
        return (f"CREATE TABLE {self.name} (id int PRIMARY KEY, org text NOT NULL, version int NOT NULL, "
                f"payload text NOT NULL{self.extra_columns})")


TABLES = (Table("accounts", "shop/accounts"), Table("orders", "shop/orders"),
          Table("notes", "docs/notes", ", body text NOT NULL DEFAULT ''"))
BY_ENTITY_KEY = {table.entity_key: table.name for table in TABLES}


Statement = tuple[str, list[object]]


@dataclass(frozen=True)
class Change:
    """One committed row change, as the writer made it."""

    table: str
    id: int
    version: int
    op: str  # created, updated, deleted
    body_length: int | None = field(default=None, compare=False)  # notes: the row's body, TOASTed when long
    organization: str = field(default="", compare=False)  # the row's organization (a delete: the one it left)

    @property
    def entity(self) -> tuple[str, int]:
        return self.table, self.id


def first_organization(row_id: int) -> str:
    return ORGANIZATIONS[(row_id + 1) % 2]


State = dict[tuple[str, int], tuple[int, int, str]]  # entity -> (version, body length, organization)


@dataclass
class Record:
    """What the database committed, in commit order (one writer: execution order is commit order)."""

    changes: list[Change] = field(default_factory=list)
    transactions: int = 0
    rolled_back: int = 0
    ambiguous_commits: int = 0  # COMMIT failed; chaos_commits told the outcome
    reconnects: int = 0

    @property
    def moves(self) -> int:
        """Rows moved to another organization (each is a delete and a create of one statement)."""
        return sum(1 for before, after in zip(self.changes, self.changes[1:], strict=False)
                   if before.op == "deleted" and after.op == "created" and before.entity == after.entity
                   and before.organization != after.organization)

    def __str__(self) -> str:
        return (f"{self.transactions} transactions committed, {self.moves} organization moves, "
                f"{self.rolled_back} rolled back, "
                f"{self.ambiguous_commits} commits answered by the marker table, {self.reconnects} reconnects")


def schema() -> str:
    """DDL for the source database: the captured tables and the commit marker table."""
    return ";\n".join([table.ddl() for table in TABLES] + ["CREATE TABLE chaos_commits (n int PRIMARY KEY)"])


def entities_config() -> str:
    return "".join(table.entity_config() for table in TABLES)


@dataclass
class Plan:
    """How much to write: ``total`` committed changes over about ``seconds``, ``large`` big transactions."""

    total: int
    seconds: float
    entities_per_table: int
    large: int = 3
    large_size: int = 500


class Writer:
    """Writes the workload and keeps the ``Record``; survives server restarts by reconnecting."""

    def __init__(self, dsn: str, plan: Plan, rng: random.Random) -> None:
        self.dsn = dsn
        self.plan = plan
        self.rng = rng
        self.record = Record()
        self.done = asyncio.Event()
        self._live: State = {}  # committed rows: entity -> (version, body length, organization)
        self._last_version: dict[tuple[str, int], int] = {}
        self._number = 0
        self._conn: psycopg.AsyncConnection | None = None

    @property
    def committed(self) -> int:
        return len(self.record.changes)

    async def run(self) -> Record:
        """Write until ``plan.total`` changes committed, paced to take about ``plan.seconds``."""
        started = time.monotonic()
        large_at = sorted(self.rng.sample(range(1, max(2, self.plan.total)), min(self.plan.large, self.plan.total - 1)))
        try:
            while self.committed < self.plan.total:
                size = self._next_size(large_at)
                await self._transaction(size)
                ahead = started + self.plan.seconds * self.committed / self.plan.total - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        finally:
            self.done.set()
        return self.record

    def _next_size(self, large_at: list[int]) -> int:
        if large_at and self.committed >= large_at[0]:
            large_at.pop(0)
            return min(self.plan.large_size, self.plan.total - self.committed)
        return self.rng.randint(1, min(MAX_TRANSACTION, max(1, self.plan.total - self.committed)))

    async def _transaction(self, size: int) -> None:
        """One transaction, retried on a new connection when the server goes away before COMMIT."""
        rollback = self.rng.random() < ROLLBACK_SHARE
        while True:
            self._number += 1
            try:
                await self._attempt(self._number, size, rollback)
                return
            except psycopg.OperationalError:
                await self._drop_connection()
                self.record.reconnects += 1
                await asyncio.sleep(0.2)

    async def _attempt(self, number: int, size: int, rollback: bool) -> None:
        statements, changes, state = self._plan_transaction(size)
        conn = await self._connection()
        async with conn.cursor() as cursor:
            for query, params in statements:
                await cursor.execute(query, params)
            await cursor.execute("INSERT INTO chaos_commits (n) VALUES (%s)", [number])
        if rollback:
            await conn.rollback()  # a lost connection rolls back too; the retry rolls back again
            self.record.rolled_back += 1
            return
        if await self._commit(conn, number):
            self._live = state
            self.record.changes.extend(changes)
            self.record.transactions += 1

    async def _commit(self, conn: psycopg.AsyncConnection, number: int) -> bool:
        """COMMIT; when its answer is lost, ask the database whether it happened."""
        try:
            await conn.commit()
            return True
        except psycopg.OperationalError:
            await self._drop_connection()
        self.record.ambiguous_commits += 1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=3) as check:
                    row = await (await check.execute("SELECT 1 FROM chaos_commits WHERE n = %s", [number])).fetchone()
                    return row is not None
            except psycopg.OperationalError:
                await asyncio.sleep(0.2)

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=3)
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def close(self) -> None:
        await self._drop_connection()

    def _plan_transaction(self, size: int) -> tuple[list[Statement], list[Change], State]:
        """The statements of one transaction, the changes they make, and the state after it."""
        state = dict(self._live)
        statements: list[Statement] = []
        changes: list[Change] = []
        table = self.rng.choice(TABLES) if size > MAX_TRANSACTION else None  # a large one stays in one table
        for _ in range(size):
            chosen = table or self.rng.choice(TABLES)
            entity = (chosen.name, self.rng.randint(1, self.plan.entities_per_table))
            statement, made = self._change(chosen, entity, state)
            statements.append(statement)
            changes.extend(made)
        return statements, changes, state

    def _change(self, table: Table, entity: tuple[str, int], state: State) -> tuple[Statement, list[Change]]:
        name, row_id = entity
        notes = table.name == "notes"
        if entity in state and self.rng.random() < 0.08:
            version, length, organization = state.pop(entity)
            return (f"DELETE FROM {name} WHERE id = %s", [row_id]), \
                [Change(name, row_id, version, "deleted", length if notes else None, organization)]
        if entity in state and self.rng.random() < MOVE_SHARE:
            return self._move(table, entity, state)
        version = self._last_version[entity] = self._last_version.get(entity, 0) + 1
        payload = self._payload(entity, version)
        body = secrets.token_urlsafe(self.rng.randint(*TOAST_BYTES)) if notes and self.rng.random() < TOAST_SHARE \
            else None
        if entity in state:  # an update without a new body leaves the TOASTed one unchanged
            _, before, organization = state[entity]
            length = len(body) if body is not None else before
            extra, values = (", body = %s", [body]) if body is not None else ("", [])
            statement: Statement = (f"UPDATE {name} SET version = %s, payload = %s{extra} WHERE id = %s",
                                    [version, payload, *values, row_id])
            op = "updated"
        else:
            length, op, organization = len(body or ""), "created", first_organization(row_id)
            row: dict[str, object] = {"id": row_id, "org": organization, "version": version,
                                      "payload": payload, **({"body": body} if body is not None else {})}
            statement = (f"INSERT INTO {name} ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})",
                         list(row.values()))
        state[entity] = (version, length, organization)
        return statement, [Change(name, row_id, version, op, length if notes else None, organization)]

    def _move(self, table: Table, entity: tuple[str, int], state: State) -> tuple[Statement, list[Change]]:
        """The row goes to the other organization: gone from the old one, new to the new one."""
        name, row_id = entity
        old_version, length, old_organization = state[entity]
        organization = next(org for org in ORGANIZATIONS if org != old_organization)
        version = self._last_version[entity] = self._last_version.get(entity, 0) + 1
        statement: Statement = (f"UPDATE {name} SET version = %s, payload = %s, org = %s WHERE id = %s",
                                [version, self._payload(entity, version), organization, row_id])
        state[entity] = (version, length, organization)
        body = length if table.name == "notes" else None
        return statement, [Change(name, row_id, old_version, "deleted", body, old_organization),
                           Change(name, row_id, version, "created", body, organization)]

    def _payload(self, entity: tuple[str, int], version: int) -> str:
        name, row_id = entity
        return f"{name} {row_id} v{version} " + self.rng.choice(("open", "paid", "shipped", "ä€😀", "'quoted'"))
