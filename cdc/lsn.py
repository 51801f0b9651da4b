"""Log sequence numbers: Postgres prints them as ``X/Y`` (two 32-bit hex halves)."""

from __future__ import annotations

from cdc.errors import ProtocolError


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> ``0x16B374D848``."""
    high, sep, low = text.partition("/")
    if not sep:
        raise ProtocolError(f"not an LSN: {text!r} (expected 'X/Y' in hex)")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError as exc:
        raise ProtocolError(f"not an LSN: {text!r} (expected 'X/Y' in hex)") from exc


def format_lsn(lsn: int) -> str:
    """``0x16B374D848`` -> ``'16/B374D848'``, the form Postgres prints and accepts."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
