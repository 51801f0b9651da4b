"""The store's connections, errors translated once.

Two ways to run a statement, one style each: ``_rows`` for the management paths (named
``:params``, rows as mappings, through one SQLAlchemy engine) and ``_binary`` for the hot path (``%b``
parameters sent as binary arrays, rows as tuples). Both put walhook's schema where a statement says ``{s}``.

The hot path has a pool of its own: psycopg connections in autocommit, so each statement of the
delivery path is one round trip (no pre-ping, BEGIN or COMMIT around it) and skips SQLAlchemy's
async layer. Every hot-path statement is a single statement, its own transaction either way.
"""

from __future__ import annotations

import select
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg
from psycopg import pq
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from models.dsn import primary_dsn
from models.errors import Conflict, StoreError
from models.migrations import migrate
from models.secretbox import Keyring

HOT_PATH_CONNECTIONS = 4
"""Connections of the delivery path's pool: the recorder, the consumer's look at waiting entities, the retry
poller and the claim keeper each need at most one at a time."""
HOT_PATH_WAIT_SECONDS = 5.0
"""How long a hot-path statement waits for a connection (the store down: the caller's own retry takes over)."""


class StoreEngine:
    """Open, close and query walhook's schema. ``open`` migrates it; ``close`` is idempotent."""

    def __init__(self, dsn: str, schema: str = "walhook", keyring: Keyring | None = None) -> None:
        """``keyring``: signing secrets are encrypted with it; None keeps them in plain text."""
        self._dsn = dsn
        self.keyring = keyring
        self.schema = schema
        self._s = f'"{schema}"'
        self._engine: AsyncEngine | None = None
        self._hot: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None

    async def open(self) -> None:
        if self._engine is not None:
            return
        # psycopg parses the DSN itself, so both URL and key=value forms work; of several hosts, the primary.
        dsn = primary_dsn(self._dsn)
        self._engine = create_async_engine("postgresql+psycopg://", pool_size=10, pool_pre_ping=True,
                                           async_creator=lambda: psycopg.AsyncConnection.connect(dsn))
        try:
            await migrate(self._engine, self.schema)
        except SQLAlchemyError as exc:
            await self.close()
            raise StoreError(f"cannot prepare the store schema {self.schema!r}: "
                             f"{first_line(getattr(exc, 'orig', None) or exc)}") from exc
        self._hot = AsyncConnectionPool(dsn, min_size=1, max_size=HOT_PATH_CONNECTIONS, kwargs={"autocommit": True},
                                        timeout=HOT_PATH_WAIT_SECONDS, open=False, name="walhook hot path")
        try:
            await self._hot.open()
            await self._after_migrations()
        except BaseException:
            await self.close()
            raise

    async def _after_migrations(self) -> None:
        """What an area must do once the schema is current (the secrets: check the keys, seal plain ones)."""

    async def close(self) -> None:
        if self._hot is not None:
            hot, self._hot = self._hot, None
            await hot.close()
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
        """One statement of the hot path, its own transaction, on the hot path's pool: ``%b`` parameters go
        in binary (arrays of bytes are not escaped value by value) and rows come back binary."""
        if self._hot is None:
            raise StoreError("the store is not open")
        try:
            for _ in range(HOT_PATH_CONNECTIONS + 1):
                async with self._hot.connection() as conn:
                    if not _still_open(conn):
                        await conn.close()  # the pool opens a new one in its place
                        continue
                    async with conn.cursor(binary=True) as cursor:
                        await cursor.execute(sql.replace("{s}", self._s), params)
                        return await cursor.fetchall() if cursor.description else []
        except psycopg.Error as exc:  # the pool's timeout is one too
            raise StoreError(f"{what}: {first_line(exc)}") from exc
        raise StoreError(f"{what}: every connection to the store was ended by the server")


def _still_open(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection of the hot path is still open, without the round trip of a ping: an idle
    connection has nothing to read, so anything there is the server ending the session (a restart, a
    terminated backend) or, rarely, a notice. Either way a new connection is the safe choice."""
    if conn.closed or conn.pgconn.status != pq.ConnStatus.OK:
        return False
    readable = select.poll()
    readable.register(conn.pgconn.socket, select.POLLIN)
    return not readable.poll(0)


def first_line(error: BaseException | None) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def as_json(value: Any) -> str:
    return orjson.dumps(value).decode()
