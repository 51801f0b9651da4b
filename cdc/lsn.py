"""Log sequence numbers: Postgres prints them as ``X/Y`` (two 32-bit hex halves)."""

from __future__ import annotations

import re

from cdc.errors import ProtocolError

SLOT_LAG_BYTES = "(pg_current_wal_insert_lsn() - confirmed_flush_lsn)::bigint"
"""A ``pg_replication_slots`` row's lag: the WAL the server keeps for the slot beyond what walhook
confirmed, counted to the insert position - a record still in the WAL buffers (a heartbeat just
emitted, say) is WAL the slot has yet to confirm as well."""

_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> ``0x16B374D848``."""
    match = _LSN.fullmatch(text)
    if match is None:
        raise ProtocolError(f"not an LSN: {text!r} (expected 'X/Y', two hex numbers of at most 32 bits)")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    """``0x16B374D848`` -> ``'16/B374D848'``, the form Postgres prints and accepts."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
