"""Unit tests for the replication sub-protocol framing (``cdc.protocol``) and LSNs (``cdc.lsn``)."""

from __future__ import annotations

import struct
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc.errors import ProtocolError
from cdc.lsn import format_lsn, parse_lsn
from cdc.protocol import Keepalive, XLogData, parse_copy_data, standby_status_update

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)


def xlogdata_frame(wal_start: int, wal_end: int, send_time: int, payload: bytes) -> bytes:
    """'w' + Int64 walStart + Int64 walEnd + Int64 sendTime + payload."""
    return b"w" + struct.pack("!QQq", wal_start, wal_end, send_time) + payload


def keepalive_frame(wal_end: int, send_time: int, reply_requested: int) -> bytes:
    """'k' + Int64 walEnd + Int64 sendTime + Byte1 replyRequested."""
    return b"k" + struct.pack("!QqB", wal_end, send_time, reply_requested)


# --------------------------------------------------------------------------------------
# parse_copy_data
# --------------------------------------------------------------------------------------


def test_xlogdata():
    frame = xlogdata_frame(0x16B374D848, 0x16B374D900, 769_000_000_000_000, b"Bpayload\x00bytes")
    assert parse_copy_data(frame) == XLogData(wal_start=0x16B374D848, wal_end=0x16B374D900,
                                              payload=b"Bpayload\x00bytes")


def test_xlogdata_from_memoryview_has_bytes_payload():
    frame = xlogdata_frame(1, 2, 3, b"I\x00\x00\x00\x01N\x00\x00")
    parsed = parse_copy_data(memoryview(frame))
    assert parsed == XLogData(wal_start=1, wal_end=2, payload=b"I\x00\x00\x00\x01N\x00\x00")
    assert type(parsed.payload) is bytes


def test_xlogdata_with_empty_payload():
    assert parse_copy_data(xlogdata_frame(5, 6, 0, b"")) == XLogData(wal_start=5, wal_end=6, payload=b"")


def test_xlogdata_unsigned_lsn_extremes():
    parsed = parse_copy_data(xlogdata_frame(2**64 - 1, 2**64 - 1, -1, b"x"))
    assert (parsed.wal_start, parsed.wal_end) == (2**64 - 1, 2**64 - 1)


@pytest.mark.parametrize(("flag", "expected"), [(0, False), (1, True)])
def test_keepalive(flag, expected):
    frame = keepalive_frame(0x16B374D848, 769_000_000_000_000, flag)
    assert parse_copy_data(frame) == Keepalive(wal_end=0x16B374D848, reply_requested=expected)


def test_keepalive_from_memoryview():
    assert parse_copy_data(memoryview(keepalive_frame(7, 0, 1))) == Keepalive(wal_end=7, reply_requested=True)


@pytest.mark.parametrize("frame", [b"r" + bytes(33), b"x", b"W" + bytes(24), b"K" + bytes(17), b"\x00"])
def test_unknown_tag(frame):
    with pytest.raises(ProtocolError, match="unknown replication message type"):
        parse_copy_data(frame)


@pytest.mark.parametrize("frame", [b"", memoryview(b"")], ids=["bytes", "memoryview"])
def test_empty_frame(frame):
    with pytest.raises(ProtocolError, match="empty"):
        parse_copy_data(frame)


@pytest.mark.parametrize("frame", [
    xlogdata_frame(1, 2, 3, b"")[:cut] for cut in (1, 9, 17, 24)
] + [
    keepalive_frame(1, 2, 1)[:cut] for cut in (1, 9, 17)
], ids=lambda frame: f"{chr(frame[0])}-{len(frame)}-bytes")
def test_truncated_frame_raises_protocol_error(frame):
    """Bytes from the server that do not parse are a ProtocolError, like in cdc.pgoutput."""
    with pytest.raises(ProtocolError):
        parse_copy_data(frame)


# --------------------------------------------------------------------------------------
# standby_status_update
# --------------------------------------------------------------------------------------

STATUS = struct.Struct("!cQQQqB")  # 'r', written, flushed, applied, clock (µs since 2000-01-01), reply


def test_status_update_layout():
    now = datetime(2024, 5, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    now_us = (now - UNIX_EPOCH) // ONE_US
    message = standby_status_update(0x16B374D848, now_us, reply=True)
    assert len(message) == 1 + 8 + 8 + 8 + 8 + 1
    tag, written, flushed, applied, clock, reply = STATUS.unpack(message)
    assert tag == b"r"
    assert written == flushed == applied == 0x16B374D848
    assert clock == (now - PG_EPOCH) // ONE_US == 767_880_000_500_000  # 8887 days + 12 h + 0.5 s
    assert reply == 1


def test_status_update_reply_defaults_to_false():
    *_, reply = STATUS.unpack(standby_status_update(1, 0))
    assert reply == 0


@pytest.mark.parametrize(("moment", "expected_clock"), [
    (PG_EPOCH, 0),
    (PG_EPOCH + ONE_US, 1),
    (UNIX_EPOCH, -946_684_800_000_000),
    (datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), -1_000_000),
])
def test_status_update_clock_counts_from_2000(moment, expected_clock):
    now_us = (moment - UNIX_EPOCH) // ONE_US
    _, _, _, _, clock, _ = STATUS.unpack(standby_status_update(0, now_us))
    assert clock == expected_clock


def test_status_update_default_clock_is_now():
    before = (time.time_ns() // 1000) - (PG_EPOCH - UNIX_EPOCH) // ONE_US
    _, _, _, _, clock, _ = STATUS.unpack(standby_status_update(5))
    after = (time.time_ns() // 1000) - (PG_EPOCH - UNIX_EPOCH) // ONE_US
    assert before <= clock <= after


def test_status_update_max_lsn():
    _, written, flushed, applied, _, _ = STATUS.unpack(standby_status_update(2**64 - 1, 0))
    assert written == flushed == applied == 2**64 - 1


# --------------------------------------------------------------------------------------
# LSNs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ("0/0", 0),
    ("0/1", 1),
    ("1/0", 1 << 32),
    ("16/B374D848", 0x16B374D848),
    ("FFFFFFFF/FFFFFFFF", 2**64 - 1),
])
def test_lsn_parse_and_format(text, value):
    assert parse_lsn(text) == value
    assert format_lsn(value) == text


def test_lsn_parse_accepts_lowercase_and_leading_zeros():
    assert parse_lsn("16/b374d848") == 0x16B374D848
    assert parse_lsn("00000016/0B374D84") == 0x160B374D84


def test_lsn_format_is_uppercase_without_padding():
    assert format_lsn(0x10000000A) == "1/A"


@settings(database=None)
@given(st.integers(0, 2**64 - 1))
def test_lsn_round_trip(value):
    assert parse_lsn(format_lsn(value)) == value


@pytest.mark.parametrize("text", ["", "/", "16B374D848", "16/", "/B374D848", "zz/1", "1/g", "1/2/3", "16-B374D848"])
def test_lsn_parse_rejects_malformed(text):
    with pytest.raises(ProtocolError, match="not an LSN"):
        parse_lsn(text)


@pytest.mark.parametrize("text", ["-1/0", "0/-1", "0/100000000", "100000000/0"])
def test_lsn_parse_rejects_out_of_range_halves(text):
    """Each half is an unsigned 32-bit number; anything else is not an LSN (Postgres' pg_lsn rejects it)."""
    with pytest.raises(ProtocolError):
        parse_lsn(text)
