"""The replication connection: a thin asyncio loop around ``psycopg.pq.PGconn``.

psycopg 3 has no replication API, but libpq does: a connection opened with
``replication=database`` accepts ``START_REPLICATION`` and then speaks CopyBoth, read with
``get_copy_data`` and written with ``put_copy_data``. All parsing happens elsewhere
(``cdc.protocol``, ``cdc.pgoutput``); this module only moves bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo

from cdc.errors import ReplicationLost, SlotBusyError, SlotInvalidated, SourceError
from cdc.lsn import format_lsn
from cdc.memory import ServerIdentity
from models.dsn import primary_dsn

# Fixed session settings make the text form of every value predictable (see cdc.values).
SESSION_OPTIONS = "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=iso_8601 -c extra_float_digits=3"


class ReplicationConnection:
    """One logical replication stream. ``open`` / ``close`` are explicit and idempotent."""

    def __init__(self, dsn: str, application_name: str = "walhook-cdc") -> None:
        # TCP keepalives let a silently dead peer surface as an error within about 30 s.
        self._conninfo = make_conninfo(primary_dsn(dsn), replication="database", options=SESSION_OPTIONS,
                                       application_name=application_name, keepalives=1, keepalives_idle=10,
                                       keepalives_interval=5, keepalives_count=3)
        self._pgconn: pq.abc.PGconn | None = None

    async def open(self) -> None:
        if self._pgconn is not None:
            return
        pgconn = await asyncio.to_thread(pq.PGconn.connect, self._conninfo.encode())
        if pgconn.status != pq.ConnStatus.OK:
            message = pgconn.get_error_message()
            pgconn.finish()
            raise ReplicationLost(f"cannot open a replication connection: {message}")
        pgconn.nonblocking = 1
        self._pgconn = pgconn

    async def command(self, command: str) -> list[list[str | None]]:
        """Run one replication command (IDENTIFY_SYSTEM, ALTER_REPLICATION_SLOT) before streaming; its rows."""
        pgconn = self._conn()
        pgconn.send_query(command.encode())
        await self._flush()
        rows: list[list[str | None]] = []
        error = ""
        while True:
            while pgconn.is_busy():
                await self._wait_readable()
                self._consume()
            result = pgconn.get_result()
            if result is None:
                break
            if result.status == pq.ExecStatus.TUPLES_OK:
                rows = [[None if (value := result.get_value(row, column)) is None else value.decode()
                         for column in range(result.nfields)] for row in range(result.ntuples)]
            elif result.status != pq.ExecStatus.COMMAND_OK:
                error = result.get_error_message().strip()
        if error:
            raise SourceError(f"{command.split()[0]} failed: {error}")
        return rows

    async def identify_system(self) -> ServerIdentity:
        """IDENTIFY_SYSTEM: the cluster's system identifier, the current timeline and the database."""
        ((system_identifier, timeline, _, database),) = await self.command("IDENTIFY_SYSTEM")
        assert system_identifier is not None and timeline is not None
        return ServerIdentity(system_identifier, int(timeline), database or "", self._conn().server_version)

    async def start(self, slot: str, publication: str, start_lsn: int = 0, messages: bool = True) -> None:
        """Send ``START_REPLICATION`` for ``slot`` with pgoutput protocol version 1."""
        options = f"proto_version '1', publication_names '{publication}'"
        if messages:
            options += ", messages 'true'"
        command = f'START_REPLICATION SLOT "{slot}" LOGICAL {format_lsn(start_lsn)} ({options})'
        pgconn = self._conn()
        pgconn.send_query(command.encode())
        await self._flush()
        while pgconn.is_busy():
            await self._wait_readable()
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None or result.status != pq.ExecStatus.COPY_BOTH:
            raise _start_error(slot, result.get_error_message() if result else pgconn.get_error_message())

    async def read(self, on_idle: Callable[[], Awaitable[float | None]] | None = None) -> list[bytes | memoryview]:
        """Every CopyData message already received; waits until there is at least one.

        ``on_idle`` runs whenever neither libpq nor the socket holds anything more: the moment to
        send what is due downstream. It returns None to wait for the next message, or the seconds
        until the next send is due: then messages accumulate unread until that moment and are
        returned before ``on_idle`` runs again, so they leave with that send (one wake-up per send,
        not one per transaction).
        """
        while True:
            messages = self._drain()
            if messages:
                return messages
            self._consume()  # what the socket already holds, without waiting
            messages = self._drain()
            if messages:
                return messages
            due_in = await on_idle() if on_idle is not None else None
            if due_in is None:
                await self._wait_readable()
                self._consume()
            else:
                await asyncio.sleep(due_in)

    def _drain(self) -> list[bytes | memoryview]:
        pgconn = self._conn()
        messages: list[bytes | memoryview] = []
        while True:
            size, data = pgconn.get_copy_data(1)
            if size > 0:
                messages.append(data)
            elif size == 0:
                return messages
            else:
                raise ReplicationLost(f"replication stream ended: {self._final_error()}")

    def _consume(self) -> None:
        try:
            self._conn().consume_input()
        except psycopg.OperationalError as exc:
            raise ReplicationLost(f"replication connection lost: {exc}") from exc

    async def send(self, message: bytes) -> None:
        """Send one CopyData message to the server (a standby status update)."""
        if self._conn().put_copy_data(message) != 1:
            raise ReplicationLost(f"cannot send to the server: {self._conn().get_error_message()}")
        await self._flush()

    async def close(self) -> None:
        if self._pgconn is not None:
            pgconn, self._pgconn = self._pgconn, None
            pgconn.finish()

    async def __aenter__(self) -> ReplicationConnection:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def _conn(self) -> pq.abc.PGconn:
        if self._pgconn is None:
            raise ReplicationLost("the replication connection is not open")
        return self._pgconn

    def _final_error(self) -> str:
        pgconn = self._conn()
        result = pgconn.get_result()
        message = result.get_error_message() if result is not None else ""
        return message.strip() or pgconn.get_error_message().strip() or "the server closed the stream"

    async def _flush(self) -> None:
        while self._conn().flush() == 1:
            await self._wait(writable=True)

    async def _wait_readable(self) -> None:
        await self._wait(writable=False)

    async def _wait(self, writable: bool) -> None:
        loop = asyncio.get_running_loop()
        fd = self._conn().socket
        ready: asyncio.Future[None] = loop.create_future()
        add, remove = (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        add(fd, wake)
        try:
            await ready
        finally:
            remove(fd)


def _start_error(slot: str, message: str) -> Exception:
    message = message.strip()
    if "is active for PID" in message:
        return SlotBusyError(f"replication slot {slot!r} is in use by another process ({message}); "
                             "stop the other walhook cdc or give this one its own [source] slot")
    if "can no longer get changes" in message or "has been invalidated" in message:  # lost while streaming
        return SlotInvalidated(slot, message)
    return SourceError(f"START_REPLICATION on slot {slot!r} failed: {message}")
