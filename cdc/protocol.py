"""The streaming replication sub-protocol inside CopyBoth: pure framing, no I/O.

The server sends XLogData (``w``) carrying one pgoutput message each, and Primary
keepalives (``k``). The client answers with Standby status updates (``r``) that confirm
how far it has durably processed the stream.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from cdc.errors import ProtocolError
from cdc.pgoutput import POSTGRES_EPOCH_OFFSET_US

_XLOG_HEADER = struct.Struct("!QQq")
_KEEPALIVE = struct.Struct("!QqB")
_STATUS = struct.Struct("!cQQQqB")


@dataclass(frozen=True, slots=True)
class XLogData:
    wal_start: int
    wal_end: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Keepalive:
    wal_end: int
    reply_requested: bool


def parse_copy_data(data: bytes | memoryview) -> XLogData | Keepalive:
    """Parse one CopyData message of the replication stream."""
    if not data:
        raise ProtocolError("empty CopyData message")
    tag = data[0]
    try:
        if tag == 0x77:  # 'w'
            wal_start, wal_end, _ = _XLOG_HEADER.unpack_from(data, 1)
            return XLogData(wal_start, wal_end, bytes(data[25:]))
        if tag == 0x6B:  # 'k'
            wal_end, _, reply = _KEEPALIVE.unpack_from(data, 1)
            return Keepalive(wal_end, bool(reply))
    except struct.error as exc:
        raise ProtocolError(f"truncated replication message {chr(tag)!r}: {exc}") from exc
    raise ProtocolError(f"unknown replication message type {chr(tag)!r}")


def xlog_payload(data: bytes | memoryview) -> bytes | memoryview | None:
    """The pgoutput message inside an XLogData, or None for anything else: the stream's fast path."""
    if data and data[0] == 0x77 and len(data) > _XLOG_HEADER.size:  # 'w'
        return data[_XLOG_HEADER.size + 1:]
    return None


def standby_status_update(confirmed_lsn: int, now_us: int | None = None, reply: bool = False) -> bytes:
    """The ``r`` message confirming ``confirmed_lsn`` as written, flushed and applied.

    Postgres may discard WAL up to the flush position, so callers pass only an LSN whose
    changes are durable downstream.
    """
    if now_us is None:
        now_us = time.time_ns() // 1000
    pg_now = now_us - POSTGRES_EPOCH_OFFSET_US
    return _STATUS.pack(b"r", confirmed_lsn, confirmed_lsn, confirmed_lsn, pg_now, int(reply))
