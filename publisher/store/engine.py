"""The store's connection: one SQLAlchemy engine (async, psycopg 3), errors translated once.

Two ways to run a statement, one style each: ``_rows`` for the management paths (named
``:params``, rows as mappings) and ``_binary`` for the hot path (``%b`` parameters sent as
binary arrays, rows as tuples). Both put walhook's schema where a statement says ``{s}``.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg
from psycopg import pq
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from models.dsn import primary_dsn
from models.errors import Conflict, StoreError
from models.migrations import migrate
from models.secretbox import Keyring

HOT_PATH_CONNECTIONS = 8
"""Hot-path statements at once per store (the recorder's flush, the consumer's look, the poller's claim, ...)."""


class StoreEngine:
    """Open, close and query walhook's schema. ``open`` migrates it; ``close`` is idempotent."""

    def __init__(self, dsn: str, schema: str = "walhook", keyring: Keyring | None = None) -> None:
        """``keyring``: signing secrets are encrypted with it; None keeps them in plain text."""
        self._dsn = dsn
        self.keyring = keyring
        self.schema = schema
        self._s = f'"{schema}"'
        self._engine: AsyncEngine | None = None
        self._statements: StatementConnections | None = None

    async def open(self) -> None:
        if self._engine is not None:
            return
        # psycopg parses the DSN itself, so both URL and key=value forms work; of several hosts, the primary.
        dsn = primary_dsn(self._dsn)
        self._engine = create_async_engine("postgresql+psycopg://", pool_size=10, pool_pre_ping=True,
                                           async_creator=lambda: psycopg.AsyncConnection.connect(dsn))
        self._statements = StatementConnections(dsn, HOT_PATH_CONNECTIONS)
        try:
            await migrate(self._engine, self.schema)
        except SQLAlchemyError as exc:
            await self.close()
            raise StoreError(f"cannot prepare the store schema {self.schema!r}: "
                             f"{first_line(getattr(exc, 'orig', None) or exc)}") from exc
        try:
            await self._after_migrations()
        except BaseException:
            await self.close()
            raise

    async def _after_migrations(self) -> None:
        """What an area must do once the schema is current (the secrets: check the keys, seal plain ones)."""

    async def close(self) -> None:
        if self._statements is not None:
            statements, self._statements = self._statements, None
            await statements.close()
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    async def __aenter__(self) -> StoreEngine:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StoreError("the store is not open")
        return self._engine

    async def ping(self) -> None:
        """Raise ``StoreError`` unless the store answers."""
        await self._rows("SELECT 1")

    async def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        try:
            async with self.engine.begin() as conn:
                result = await conn.execute(text(sql.replace("{s}", self._s)), params or {})
                return [dict(row) for row in result.mappings().all()] if result.returns_rows else []
        except IntegrityError as exc:
            if getattr(exc.orig, "sqlstate", None) == "23505":  # unique violation
                detail = getattr(getattr(exc.orig, "diag", None), "message_detail", None) or "duplicate"
                raise Conflict(f"already exists: {detail}") from exc
            raise StoreError(f"the store refused the change: {first_line(exc.orig)}") from exc
        except SQLAlchemyError as exc:
            # The driver's message only: SQLAlchemy's would repeat the statement and its parameters.
            raise StoreError(f"store query failed: {first_line(getattr(exc, 'orig', None) or exc)}") from exc

    async def _many(self, sql: str, params: list[dict[str, Any]]) -> None:
        """One statement run for each parameter set, all in one transaction."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(text(sql.replace("{s}", self._s)), params)
        except SQLAlchemyError as exc:
            raise StoreError(f"store update failed: {first_line(getattr(exc, 'orig', None) or exc)}") from exc

    async def _binary(self, sql: str, params: Sequence[Any], what: str) -> list[tuple[Any, ...]]:
        """One statement of the hot path, in its own transaction, on a driver connection of its own: ``%b``
        parameters go in binary (arrays of bytes are not escaped value by value) and rows come back binary."""
        if self._statements is None:
            raise StoreError("the store is not open")
        try:
            return await self._statements.run(sql.replace("{s}", self._s), params)
        except (OSError, psycopg.Error) as exc:
            raise StoreError(f"{what}: {first_line(exc)}") from exc


class StatementConnections:
    """Autocommit connections for the hot path's single statements, one statement at a time each.

    A statement in autocommit is its own transaction, as atomic as one between BEGIN and COMMIT, and
    it costs one round trip instead of four (the pool's ping, BEGIN, the statement, COMMIT): the
    publisher's look for waiting entities sits between consuming an event and sending it. A connection
    whose statement failed or was cancelled is closed rather than reused; the next opens a new one.
    """

    def __init__(self, dsn: str, size: int) -> None:
        self._dsn = dsn
        self._slots = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._closed = False

    async def run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._slots:
            conn = await self._take()
            try:
                async with conn.cursor(binary=True) as cursor:
                    await cursor.execute(sql, params)
                    rows = await cursor.fetchall() if cursor.description else []
            except BaseException:
                await conn.close()
                raise
            if self._closed:
                await conn.close()
            else:
                self._idle.append(conn)
            return rows

    async def _take(self) -> psycopg.AsyncConnection[Any]:
        """An idle connection still open, or a new one."""
        while self._idle:
            conn = self._idle.pop()
            if _alive(conn):
                return conn
            await conn.close()
        # prepare_threshold None: statements are not prepared server-side, as on the pool's connections
        # (a pooler in transaction mode, or a migration by a newer version, would break prepared ones).
        return await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, prepare_threshold=None)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


def _alive(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection is still open: the pool's ping without its round trip.

    An idle connection has nothing to read. Anything there is the server ending the session (a restart,
    a terminated backend) or, rarely, a notice: either way a new connection is the safe choice.
    """
    if conn.closed or conn.pgconn.status != pq.ConnStatus.OK:
        return False
    waiting = select.poll()
    waiting.register(conn.pgconn.socket, select.POLLIN)
    return not waiting.poll(0)


def first_line(error: BaseException | None) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def as_json(value: Any) -> str:
    return orjson.dumps(value).decode()
