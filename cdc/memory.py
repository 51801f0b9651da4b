"""Where capture streamed, remembered outside the source cluster, so a vanished slot is never recreated silently.

A logical slot lives on the server. When the server is replaced (a standby promoted without a
synced slot, a restore, a DSN now pointing at another cluster), the slot is simply not there, and
creating a fresh one would start from *now*: every change committed since walhook's last confirmed
position would never be captured, and nothing would say so. So the capture process keeps, in the
store (``[store]``, table ``cdc_positions``), the server's system identifier and timeline, the slot
and the last confirmed LSN, and at start ``judge`` compares them with the server it reached.

A promotion keeps the system identifier (a physical standby is a copy of its primary) and moves to a
new timeline: with a failover slot present that is a normal resume. A missing slot, or another
system identifier, is refused unless the operator accepts the loss for one start
(``walhook cdc --accept-lost-changes``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from cdc.errors import PositionUnknown, SlotLost
from cdc.lsn import format_lsn, parse_lsn
from models.dsn import primary_dsn

log = logging.getLogger("walhook.cdc")

ACCEPT_FLAG = "walhook cdc --accept-lost-changes"


@dataclass(frozen=True)
class ServerIdentity:
    """What IDENTIFY_SYSTEM and the connection say about the server capture reached."""

    system_identifier: str
    timeline: int
    database: str
    version: int  # server_version_num, e.g. 180006


@dataclass(frozen=True)
class StreamPosition:
    """Where capture last confirmed a slot, on which server."""

    database: str
    slot: str
    system_identifier: str
    timeline: int
    confirmed_lsn: int


def judge(remembered: StreamPosition | None, server: ServerIdentity, slot_exists: bool) -> str | None:
    """Why streaming this slot on this server would lose changes, as one line; None when it would not (pure)."""
    if remembered is None:
        return None  # first start against this database and slot
    since = format_lsn(remembered.confirmed_lsn)
    if remembered.system_identifier != server.system_identifier:
        return (f"the source server is another cluster (system identifier {server.system_identifier}) than the one "
                f"walhook streamed slot {remembered.slot!r} from (system identifier {remembered.system_identifier}, "
                f"confirmed up to {since}): the changes committed there after {since} would never be captured")
    if not slot_exists:
        return (f"replication slot {remembered.slot!r} is missing on the source server (timeline {server.timeline}), "
                f"though walhook streamed it up to {since} on timeline {remembered.timeline}: a new slot would "
                f"start from now, and the changes committed after {since} would never be captured")
    return None


def refusal(problem: str) -> str:
    """The whole refusal: what would be lost, the flag that accepts it, and how to recover the gap."""
    return (f"{problem}; to capture from now on anyway, start once with `{ACCEPT_FLAG}`, then backfill the gap "
            "from the tables")


class StorePositions:
    """The ``cdc_positions`` table of the store, over one psycopg connection reopened on error."""

    def __init__(self, dsn: str, schema: str = "walhook") -> None:
        self._dsn = primary_dsn(dsn)  # a store on a replicated cluster: always its primary
        self._table = f'"{schema}".cdc_positions'
        self._schema = schema
        self._conn: psycopg.AsyncConnection | None = None
        self._migrated = False

    async def recall(self, database: str, slot: str) -> StreamPosition | None:
        rows = await self._execute(f"SELECT system_identifier, timeline, confirmed_lsn::text FROM {self._table} "
                                   "WHERE database = %s AND slot = %s", [database, slot], fetch=True)
        if not rows:
            return None
        system_identifier, timeline, lsn = rows[0]
        return StreamPosition(database, slot, system_identifier, timeline, parse_lsn(lsn))

    async def remember(self, position: StreamPosition) -> None:
        await self._execute(
            f"INSERT INTO {self._table} (database, slot, system_identifier, timeline, confirmed_lsn) "
            "VALUES (%s, %s, %s, %s, %s::pg_lsn) ON CONFLICT (database, slot) DO UPDATE SET "
            "system_identifier = excluded.system_identifier, timeline = excluded.timeline, "
            "confirmed_lsn = excluded.confirmed_lsn, updated_at = now()",
            [position.database, position.slot, position.system_identifier, position.timeline,
             format_lsn(position.confirmed_lsn)])

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def __aenter__(self) -> StorePositions:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _execute(self, query: str, params: list[object], fetch: bool = False) -> list[tuple]:  # type: ignore[type-arg]
        # Twice: the kept connection may have died with a server that failed over since the last use.
        for attempt in (1, 2):
            try:
                conn = await self._connection()
                cursor = await conn.execute(query, params)
                return await cursor.fetchall() if fetch else []
            except (psycopg.Error, OSError) as exc:
                await self.close()
                if attempt == 2:
                    raise PositionUnknown(f"the store cannot be read or written: {str(exc).strip()}") from exc
        raise AssertionError("unreachable")

    async def _connection(self) -> psycopg.AsyncConnection:
        if not self._migrated:
            await self._migrate()
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, connect_timeout=5)
        return self._conn

    async def _migrate(self) -> None:
        """The table comes with the store's migrations (the capture may start before any publisher did).
        Only the schema: the capture never reads signing secrets, so it needs no key."""
        from sqlalchemy.exc import SQLAlchemyError
        from sqlalchemy.ext.asyncio import create_async_engine

        from models.migrations import migrate

        engine = create_async_engine("postgresql+psycopg://", pool_size=1,
                                     async_creator=lambda: psycopg.AsyncConnection.connect(self._dsn))
        try:
            await migrate(engine, self._schema)
        except SQLAlchemyError as exc:
            raise psycopg.OperationalError(f"cannot prepare the store schema: {exc}") from exc
        finally:
            await engine.dispose()
        self._migrated = True


class SlotKeeper:
    """Decides, at each session's start, whether the slot may be used or created; remembers positions.

    ``memory`` None (no ``[store]`` configured): nothing is remembered, and a missing slot is
    created as on a first start, with a warning saying so.
    """

    def __init__(self, memory: StorePositions | None, accept_lost_changes: bool = False) -> None:
        self.memory = memory
        self.accept_lost_changes = accept_lost_changes
        self._said: set[str] = set()
        self._remembered: StreamPosition | None = None

    def say_once(self, key: str, message: str) -> None:
        """Log a warning the first time only (each session repeats the start checks)."""
        if key not in self._said:
            self._said.add(key)
            log.warning(message)

    async def check(self, server: ServerIdentity, slot: str, slot_exists: bool) -> None:
        """Raise ``SlotLost`` when using or creating ``slot`` here would skip changes silently."""
        if self.memory is None:
            if not slot_exists:
                self.say_once("no-memory", "no [store] configured: walhook cannot tell a first start from a slot "
                              "that vanished (after a failover, say); creating the slot as on a first start")
            return
        remembered = await self._recall(server, slot, slot_exists)
        problem = judge(remembered, server, slot_exists)
        if problem is not None and not self.accept_lost_changes:
            raise SlotLost(refusal(problem))
        if problem is not None:
            log.warning("%s; accepted by --accept-lost-changes", problem)
            self.accept_lost_changes = False  # for this loss only; a later one is refused again
        elif remembered is not None and remembered.timeline != server.timeline:
            log.info("the source server moved from timeline %d to %d (a promotion); resuming slot %s",
                     remembered.timeline, server.timeline, slot)

    async def _recall(self, server: ServerIdentity, slot: str, slot_exists: bool) -> StreamPosition | None:
        assert self.memory is not None
        try:
            return await self.memory.recall(server.database, slot)
        except PositionUnknown as exc:
            if not slot_exists:
                raise PositionUnknown(f"replication slot {slot!r} is missing and {exc}, so walhook cannot tell "
                                      "whether creating it would skip changes; waiting for the store") from exc
            log.warning("%s; streaming the existing slot %s without checking where it was", exc, slot)
            return None

    async def remember(self, server: ServerIdentity, slot: str, lsn: int) -> None:
        """Best effort: a store outage must not stop capture (the next write catches up)."""
        if self.memory is None:
            return
        position = StreamPosition(server.database, slot, server.system_identifier, server.timeline, lsn)
        if position == self._remembered:
            return
        try:
            await self.memory.remember(position)
            self._remembered = position
        except PositionUnknown as exc:
            log.warning("cannot remember the confirmed position %s of slot %s: %s", format_lsn(lsn), slot, exc)

    async def close(self) -> None:
        if self.memory is not None:
            await self.memory.close()
