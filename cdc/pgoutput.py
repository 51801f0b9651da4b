"""Decoder for the pgoutput logical replication protocol, version 1.

Pure code: ``decode(payload)`` takes the bytes of one XLogData payload and returns one
typed message. Column values stay as the server's text bytes (``bytes``), ``None`` for
SQL NULL, or ``UNCHANGED_TOAST`` when the server omitted an unchanged TOASTed value;
turning text into typed JSON happens later, per column (``cdc.values``).

Reference: "Logical Replication Message Formats" in the Postgres documentation.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cdc.errors import ProtocolError


class _UnchangedToast:
    """Marker for a TOASTed value the server did not send because it did not change."""

    _instance: _UnchangedToast | None = None

    def __new__(cls) -> _UnchangedToast:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST: Final = _UnchangedToast()

ColumnValue = bytes | None | _UnchangedToast
TupleData = tuple[ColumnValue, ...]

# Postgres timestamps count microseconds from 2000-01-01; Unix time from 1970-01-01.
POSTGRES_EPOCH_OFFSET_US: Final = 946_684_800_000_000

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I64 = struct.Struct("!q")
_U64 = struct.Struct("!Q")
_BEGIN = struct.Struct("!QqI")
_COMMIT = struct.Struct("!bQQq")
_REL_COLUMN_TAIL = struct.Struct("!Ii")


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_time_us: int  # microseconds since the Unix epoch
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time_us: int


@dataclass(frozen=True, slots=True)
class Origin:
    origin_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}.{self.name}"


@dataclass(frozen=True, slots=True)
class Type:
    oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    relation_oid: int
    new: TupleData


@dataclass(frozen=True, slots=True)
class Update:
    relation_oid: int
    new: TupleData
    old: TupleData | None  # the full old row ('O') or its key columns ('K'), or None
    old_is_key_only: bool


@dataclass(frozen=True, slots=True)
class Delete:
    relation_oid: int
    old: TupleData
    old_is_key_only: bool


@dataclass(frozen=True, slots=True)
class Truncate:
    relation_oids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | LogicalMessage


def decode(payload: bytes | memoryview) -> Message:
    """Decode one pgoutput message. Raises ``ProtocolError`` naming the message on bad bytes."""
    # One copy of the payload: column values must outlive the connection's buffer anyway.
    buf = payload if isinstance(payload, bytes) else bytes(payload)
    if not buf:
        raise ProtocolError("empty pgoutput message")
    tag = chr(buf[0])
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise ProtocolError(f"unknown pgoutput message type {tag!r}")
    try:
        return decoder(buf)
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"truncated or malformed pgoutput message {tag!r}: {exc}") from exc


def _cstring(buf: bytes, offset: int) -> tuple[str, int]:
    end = buf.find(b"\0", offset)
    if end < 0:
        raise ProtocolError("unterminated string in pgoutput message")
    return buf[offset:end].decode("utf-8"), end + 1


def _begin(buf: bytes) -> Begin:
    final_lsn, ts, xid = _BEGIN.unpack_from(buf, 1)
    return Begin(final_lsn, ts + POSTGRES_EPOCH_OFFSET_US, xid)


def _commit(buf: bytes) -> Commit:
    flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(buf, 1)
    return Commit(flags, commit_lsn, end_lsn, ts + POSTGRES_EPOCH_OFFSET_US)


def _origin(buf: bytes) -> Origin:
    (lsn,) = _U64.unpack_from(buf, 1)
    name, _ = _cstring(buf, 9)
    return Origin(lsn, name)


def _relation(buf: bytes) -> Relation:
    (oid,) = _U32.unpack_from(buf, 1)
    namespace, offset = _cstring(buf, 5)
    name, offset = _cstring(buf, offset)
    identity = chr(buf[offset])
    (count,) = _I16.unpack_from(buf, offset + 1)
    offset += 3
    columns = []
    for _ in range(count):
        flags = buf[offset]
        column_name, offset = _cstring(buf, offset + 1)
        type_oid, modifier = _REL_COLUMN_TAIL.unpack_from(buf, offset)
        offset += 8
        columns.append(Column(column_name, type_oid, modifier, bool(flags & 1)))
    return Relation(oid, namespace or "pg_catalog", name, identity, tuple(columns))


def _type(buf: bytes) -> Type:
    (oid,) = _U32.unpack_from(buf, 1)
    namespace, offset = _cstring(buf, 5)
    name, _ = _cstring(buf, offset)
    return Type(oid, namespace, name)


def _tuple(buf: bytes, offset: int) -> tuple[TupleData, int]:
    # The hottest loop of capture: locals instead of globals, one unpack per value.
    (count,) = _I16.unpack_from(buf, offset)
    offset += 2
    values: list[ColumnValue] = []
    append = values.append
    length_at = _I32.unpack_from
    size = len(buf)
    for _ in range(count):
        kind = buf[offset]
        if kind == 0x74 or kind == 0x62:  # 't' text, 'b' binary
            (length,) = length_at(buf, offset + 1)
            start = offset + 5
            offset = start + length
            if length < 0 or offset > size:
                raise ProtocolError(f"column value of {length} bytes runs past the end of the message")
            append(buf[start:offset])
        elif kind == 0x6E:  # 'n' null
            append(None)
            offset += 1
        elif kind == 0x75:  # 'u' unchanged TOAST
            append(UNCHANGED_TOAST)
            offset += 1
        else:
            raise ProtocolError(f"unknown tuple column kind {chr(kind)!r}")
    return tuple(values), offset


def _insert(buf: bytes) -> Insert:
    (oid,) = _U32.unpack_from(buf, 1)
    _expect(buf, 5, "N", "Insert")
    new, _ = _tuple(buf, 6)
    return Insert(oid, new)


def _update(buf: bytes) -> Update:
    (oid,) = _U32.unpack_from(buf, 1)
    kind = chr(buf[5])
    old: TupleData | None = None
    offset = 6
    if kind in "KO":
        old, offset = _tuple(buf, 6)
        _expect(buf, offset, "N", "Update")
        offset += 1
    elif kind != "N":
        raise ProtocolError(f"Update: unexpected tuple marker {kind!r}")
    new, _ = _tuple(buf, offset)
    return Update(oid, new, old, kind == "K")


def _delete(buf: bytes) -> Delete:
    (oid,) = _U32.unpack_from(buf, 1)
    kind = chr(buf[5])
    if kind not in "KO":
        raise ProtocolError(f"Delete: unexpected tuple marker {kind!r}")
    old, _ = _tuple(buf, 6)
    return Delete(oid, old, kind == "K")


def _truncate(buf: bytes) -> Truncate:
    (count,) = _I32.unpack_from(buf, 1)
    options = buf[5]
    oids = struct.unpack_from(f"!{count}I", buf, 6)
    return Truncate(tuple(oids), bool(options & 1), bool(options & 2))


def _message(buf: bytes) -> LogicalMessage:
    flags = buf[1]
    (lsn,) = _U64.unpack_from(buf, 2)
    prefix, offset = _cstring(buf, 10)
    (length,) = _I32.unpack_from(buf, offset)
    content = buf[offset + 4:offset + 4 + length]
    if len(content) != length:
        raise ProtocolError("Message: content shorter than its declared length")
    return LogicalMessage(bool(flags & 1), lsn, prefix, content)


def _expect(buf: bytes, offset: int, marker: str, message: str) -> None:
    if chr(buf[offset]) != marker:
        raise ProtocolError(f"{message}: expected {marker!r} at byte {offset}, got {chr(buf[offset])!r}")


_DECODERS: dict[str, Callable[[bytes], Message]] = {
    "B": _begin, "C": _commit, "O": _origin, "R": _relation, "Y": _type,
    "I": _insert, "U": _update, "D": _delete, "T": _truncate, "M": _message,
}
