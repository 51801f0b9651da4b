"""Unit tests for the pgoutput (protocol version 1) decoder, ``cdc.pgoutput.decode``.

The byte builders below encode each message independently of the decoder, following
"Logical Replication Message Formats" in the PostgreSQL documentation: integers are
big-endian, strings are NUL-terminated UTF-8.
"""

from __future__ import annotations

import contextlib
import struct
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc.errors import ProtocolError
from cdc.pgoutput import (
    POSTGRES_EPOCH_OFFSET_US,
    UNCHANGED_TOAST,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    Relation,
    Truncate,
    Type,
    Update,
    decode,
)

# --------------------------------------------------------------------------------------
# Byte builders (independent of the decoder under test)
# --------------------------------------------------------------------------------------


def int8(value: int) -> bytes:
    return struct.pack("!b", value)


def int16(value: int) -> bytes:
    return struct.pack("!h", value)


def int32(value: int) -> bytes:
    return struct.pack("!i", value)


def oid32(value: int) -> bytes:
    """Oids and xids are unsigned on the wire (the docs call them Int32)."""
    return struct.pack("!I", value)


def int64(value: int) -> bytes:
    return struct.pack("!q", value)


def lsn64(value: int) -> bytes:
    """LSNs (XLogRecPtr) are unsigned on the wire (the docs call them Int64)."""
    return struct.pack("!Q", value)


def string(text: str) -> bytes:
    return text.encode("utf-8") + b"\0"


def binary(value: bytes) -> tuple[str, bytes]:
    """Marks a tuple value to be sent with kind 'b' (binary) instead of 't' (text)."""
    return ("b", value)


def tuple_data(values: list) -> bytes:
    """TupleData: Int16 ncols, then per column Byte1 kind and, for 't'/'b', Int32 length + bytes."""
    out = bytearray(int16(len(values)))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED_TOAST:
            out += b"u"
        elif isinstance(value, tuple):
            kind, data = value
            out += kind.encode("ascii") + int32(len(data)) + data
        else:
            out += b"t" + int32(len(value)) + value
    return bytes(out)


def begin_msg(final_lsn: int, pg_time_us: int, xid: int) -> bytes:
    return b"B" + lsn64(final_lsn) + int64(pg_time_us) + oid32(xid)


def commit_msg(flags: int, commit_lsn: int, end_lsn: int, pg_time_us: int) -> bytes:
    return b"C" + int8(flags) + lsn64(commit_lsn) + lsn64(end_lsn) + int64(pg_time_us)


def origin_msg(lsn: int, name: str) -> bytes:
    return b"O" + lsn64(lsn) + string(name)


def relation_msg(oid: int, namespace: str, name: str, identity: str,
                 columns: list[tuple[int, str, int, int]]) -> bytes:
    """``columns``: (flags, name, type oid, typmod) per column."""
    out = bytearray(b"R" + oid32(oid) + string(namespace) + string(name) + identity.encode("ascii"))
    out += int16(len(columns))
    for flags, column_name, type_oid, typmod in columns:
        out += int8(flags) + string(column_name) + oid32(type_oid) + int32(typmod)
    return bytes(out)


def type_msg(oid: int, namespace: str, name: str) -> bytes:
    return b"Y" + oid32(oid) + string(namespace) + string(name)


def insert_msg(oid: int, new: list) -> bytes:
    return b"I" + oid32(oid) + b"N" + tuple_data(new)


def update_msg(oid: int, new: list, old: list | None = None, old_kind: str = "K") -> bytes:
    old_part = b"" if old is None else old_kind.encode("ascii") + tuple_data(old)
    return b"U" + oid32(oid) + old_part + b"N" + tuple_data(new)


def delete_msg(oid: int, old: list, old_kind: str = "K") -> bytes:
    return b"D" + oid32(oid) + old_kind.encode("ascii") + tuple_data(old)


def truncate_msg(oids: list[int], options: int) -> bytes:
    return b"T" + int32(len(oids)) + int8(options) + b"".join(oid32(oid) for oid in oids)


def logical_msg(transactional: bool, lsn: int, prefix: str, content: bytes) -> bytes:
    return (b"M" + int8(1 if transactional else 0) + lsn64(lsn) + string(prefix)
            + int32(len(content)) + content)


# --------------------------------------------------------------------------------------
# Timestamps: computed with datetime, independently of POSTGRES_EPOCH_OFFSET_US
# --------------------------------------------------------------------------------------

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)


def pg_us(moment: datetime) -> int:
    return (moment - PG_EPOCH) // ONE_US


def unix_us(moment: datetime) -> int:
    return (moment - UNIX_EPOCH) // ONE_US


COMMIT_TIME = datetime(2024, 5, 1, 12, 0, 0, 500_000, tzinfo=UTC)


def test_epoch_offset_constant_is_2000_minus_1970():
    assert POSTGRES_EPOCH_OFFSET_US == (PG_EPOCH - UNIX_EPOCH) // ONE_US


# --------------------------------------------------------------------------------------
# Round trips, one message type at a time
# --------------------------------------------------------------------------------------


def test_begin():
    message = decode(begin_msg(0x16B374D848, pg_us(COMMIT_TIME), 7421))
    assert message == Begin(final_lsn=0x16B374D848, commit_time_us=unix_us(COMMIT_TIME), xid=7421)


@pytest.mark.parametrize("moment", [
    PG_EPOCH,
    UNIX_EPOCH,
    datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2262, 4, 11, tzinfo=UTC),
], ids=str)
def test_begin_timestamp_converted_to_unix_microseconds(moment):
    message = decode(begin_msg(1, pg_us(moment), 1))
    assert message.commit_time_us == unix_us(moment)


def test_begin_unsigned_extremes():
    message = decode(begin_msg(2**64 - 1, 0, 2**32 - 1))
    assert message == Begin(final_lsn=2**64 - 1, commit_time_us=unix_us(PG_EPOCH), xid=2**32 - 1)


def test_commit():
    message = decode(commit_msg(0, 0x16B374D848, 0x16B374D878, pg_us(COMMIT_TIME)))
    assert message == Commit(flags=0, commit_lsn=0x16B374D848, end_lsn=0x16B374D878,
                             commit_time_us=unix_us(COMMIT_TIME))


def test_origin():
    assert decode(origin_msg(0xABCDEF, "node_a")) == Origin(origin_lsn=0xABCDEF, name="node_a")


def test_origin_unicode_name():
    assert decode(origin_msg(1, "Ünïcødé-名前")).name == "Ünïcødé-名前"


def test_relation():
    payload = relation_msg(16384, "public", "orders", "d", [
        (1, "id", 23, -1),
        (0, "note", 1043, 104),
        (0, "amount", 1700, 655366),
    ])
    assert decode(payload) == Relation(
        oid=16384, namespace="public", name="orders", replica_identity="d",
        columns=(
            Column(name="id", type_oid=23, type_modifier=-1, is_key=True),
            Column(name="note", type_oid=1043, type_modifier=104, is_key=False),
            Column(name="amount", type_oid=1700, type_modifier=655366, is_key=False),
        ),
    )


def test_relation_empty_namespace_means_pg_catalog():
    relation = decode(relation_msg(1259, "", "pg_class", "n", [(0, "relname", 19, -1)]))
    assert relation.namespace == "pg_catalog"
    assert relation.qualified_name == "pg_catalog.pg_class"


def test_relation_unicode_names():
    relation = decode(relation_msg(16390, "schéma", "Ünïcødé", "f", [(1, "名前", 25, -1), (0, "🎉", 16, -1)]))
    assert relation.namespace == "schéma"
    assert relation.name == "Ünïcødé"
    assert relation.qualified_name == "schéma.Ünïcødé"
    assert [column.name for column in relation.columns] == ["名前", "🎉"]
    assert [column.is_key for column in relation.columns] == [True, False]


@pytest.mark.parametrize("identity", ["d", "n", "f", "i"])
def test_relation_replica_identity(identity):
    assert decode(relation_msg(1, "public", "t", identity, [])).replica_identity == identity


def test_relation_without_columns():
    assert decode(relation_msg(1, "public", "t", "d", [])).columns == ()


def test_relation_high_oids_are_unsigned():
    relation = decode(relation_msg(2**32 - 1, "public", "t", "d", [(0, "c", 2**32 - 2, -1)]))
    assert relation.oid == 2**32 - 1
    assert relation.columns[0].type_oid == 2**32 - 2


def test_type():
    assert decode(type_msg(16500, "public", "mood")) == Type(oid=16500, namespace="public", name="mood")


def test_insert_null_toast_and_text_in_one_tuple():
    message = decode(insert_msg(16384, [b"42", None, UNCHANGED_TOAST, b"hello"]))
    assert message == Insert(relation_oid=16384, new=(b"42", None, UNCHANGED_TOAST, b"hello"))
    assert message.new[2] is UNCHANGED_TOAST


def test_insert_binary_kind_value():
    assert decode(insert_msg(1, [binary(b"\x00\x01\xff")])).new == (b"\x00\x01\xff",)


def test_insert_text_value_with_embedded_nul_and_empty_value():
    assert decode(insert_msg(1, [b"a\0b", b""])).new == (b"a\0b", b"")


def test_insert_without_columns():
    assert decode(insert_msg(1, [])) == Insert(relation_oid=1, new=())


def test_insert_unicode_text_value():
    value = "Ünïcødé 名前 🎉".encode()
    assert decode(insert_msg(1, [value])).new == (value,)


def test_insert_one_megabyte_text_value():
    value = ("0123456789abcdef" * 65536).encode()
    assert len(value) == 1 << 20
    message = decode(insert_msg(7, [b"1", value, None]))
    assert message.new == (b"1", value, None)


def test_values_are_bytes():
    message = decode(memoryview(insert_msg(1, [b"x", binary(b"y")])))
    assert all(type(value) is bytes for value in message.new)


def test_update_with_key_old_tuple():
    message = decode(update_msg(16384, new=[b"1", b"new"], old=[b"1", None], old_kind="K"))
    assert message == Update(relation_oid=16384, new=(b"1", b"new"), old=(b"1", None), old_is_key_only=True)


def test_update_with_full_old_tuple():
    message = decode(update_msg(16384, new=[b"1", b"new", UNCHANGED_TOAST], old=[b"1", b"old", b"big"],
                                old_kind="O"))
    assert message == Update(relation_oid=16384, new=(b"1", b"new", UNCHANGED_TOAST),
                             old=(b"1", b"old", b"big"), old_is_key_only=False)


def test_update_without_old_tuple():
    message = decode(update_msg(16384, new=[b"1", None]))
    assert message == Update(relation_oid=16384, new=(b"1", None), old=None, old_is_key_only=False)


def test_delete_with_key_old_tuple():
    message = decode(delete_msg(16384, old=[b"1", None, None], old_kind="K"))
    assert message == Delete(relation_oid=16384, old=(b"1", None, None), old_is_key_only=True)


def test_delete_with_full_old_tuple():
    message = decode(delete_msg(16384, old=[b"1", b"text", None], old_kind="O"))
    assert message == Delete(relation_oid=16384, old=(b"1", b"text", None), old_is_key_only=False)


@pytest.mark.parametrize(("options", "cascade", "restart_identity"), [
    (0, False, False),
    (1, True, False),
    (2, False, True),
    (3, True, True),
])
def test_truncate_options(options, cascade, restart_identity):
    message = decode(truncate_msg([16384, 16390], options))
    assert message == Truncate(relation_oids=(16384, 16390), cascade=cascade, restart_identity=restart_identity)


def test_truncate_single_relation_with_unsigned_oid():
    assert decode(truncate_msg([2**32 - 1], 0)).relation_oids == (2**32 - 1,)


def test_transactional_message():
    message = decode(logical_msg(True, 0x16B374D848, "walhook", b'{"k": 1}'))
    assert message == LogicalMessage(transactional=True, lsn=0x16B374D848, prefix="walhook", content=b'{"k": 1}')


def test_non_transactional_message():
    message = decode(logical_msg(False, 5, "audit", b"\x00\xffbinary\x00"))
    assert message == LogicalMessage(transactional=False, lsn=5, prefix="audit", content=b"\x00\xffbinary\x00")


def test_message_with_empty_content_and_unicode_prefix():
    message = decode(logical_msg(True, 1, "préfixe/名前", b""))
    assert message.prefix == "préfixe/名前"
    assert message.content == b""


# --------------------------------------------------------------------------------------
# A sample of every message type, reused by the memoryview and truncation tests
# --------------------------------------------------------------------------------------

SAMPLES: dict[str, bytes] = {
    "begin": begin_msg(0x16B374D848, pg_us(COMMIT_TIME), 7421),
    "commit": commit_msg(0, 0x16B374D848, 0x16B374D878, pg_us(COMMIT_TIME)),
    "origin": origin_msg(0xABCDEF, "node_a"),
    "relation": relation_msg(16390, "public", "Ünïcødé", "d", [(1, "id", 23, -1), (0, "名前", 25, -1)]),
    "type": type_msg(16500, "public", "mood"),
    "insert": insert_msg(16390, [b"42", None, UNCHANGED_TOAST, b"hello"]),
    "update_key": update_msg(16390, new=[b"42", b"new"], old=[b"41", None], old_kind="K"),
    "update_old": update_msg(16390, new=[b"42", b"new"], old=[b"42", b"old"], old_kind="O"),
    "update_no_old": update_msg(16390, new=[b"42", b"new"]),
    "delete_key": delete_msg(16390, old=[b"42", None], old_kind="K"),
    "delete_old": delete_msg(16390, old=[b"42", b"old"], old_kind="O"),
    "truncate": truncate_msg([16384, 16390], 3),
    "message": logical_msg(True, 0x10, "walhook", b"content"),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_memoryview_gives_same_result_as_bytes(name):
    payload = SAMPLES[name]
    assert decode(memoryview(payload)) == decode(payload)


@pytest.mark.parametrize("name", SAMPLES)
def test_memoryview_slice_of_a_larger_buffer(name):
    """The payload usually arrives as a slice of the XLogData frame, not at offset 0."""
    frame = b"w" + bytes(24) + SAMPLES[name]
    assert decode(memoryview(frame)[25:]) == decode(SAMPLES[name])


@pytest.mark.parametrize("name", SAMPLES)
def test_every_truncation_raises_protocol_error(name):
    """Every strict prefix of a valid message must raise ProtocolError, never decode or raise anything else."""
    payload = SAMPLES[name]
    wrong = []
    for cut in range(len(payload)):
        try:
            result = decode(payload[:cut])
        except ProtocolError:
            continue
        except Exception as exc:
            wrong.append((cut, f"raised {type(exc).__name__}: {exc}"))
        else:
            wrong.append((cut, f"decoded to {result!r}"))
    assert wrong == [], f"{name} ({len(payload)} bytes): prefixes that did not raise ProtocolError: {wrong}"


def test_truncated_last_text_value_is_not_silently_shortened():
    """A text value cut short must not decode as a shorter value (length says 5, only 2 bytes present)."""
    payload = insert_msg(1, [b"hello"])
    with pytest.raises(ProtocolError):
        decode(payload[:-3])


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", memoryview(b""), bytearray()], ids=["bytes", "memoryview", "bytearray"])
def test_empty_payload(payload):
    with pytest.raises(ProtocolError, match="empty"):
        decode(payload)


@pytest.mark.parametrize("tag", [b"Z", b"S", b"E", b"A", b"c", b"\x00", b"\xff"])
def test_unknown_tag(tag):
    """Includes the protocol-v2 streaming tags 'S', 'E', 'A' which v1 never sends."""
    with pytest.raises(ProtocolError, match="unknown pgoutput message type"):
        decode(tag + bytes(20))


@pytest.mark.parametrize("build", [
    lambda kind: insert_msg(1, [(kind, b"")]),
    lambda kind: update_msg(1, new=[b"1"], old=[(kind, b"")], old_kind="O"),
    lambda kind: update_msg(1, new=[(kind, b"")]),
    lambda kind: delete_msg(1, old=[b"1", (kind, b"")]),
], ids=["insert", "update_old", "update_new", "delete"])
def test_unknown_tuple_kind(build):
    with pytest.raises(ProtocolError, match="unknown tuple column kind 'x'"):
        decode(build("x"))


@pytest.mark.parametrize("payload", [
    b"O" + lsn64(1) + b"no-terminator",
    b"Y" + oid32(1) + string("public") + b"mood",
    b"Y" + oid32(1) + b"public",
    b"R" + oid32(1) + b"public",
    b"R" + oid32(1) + string("public") + b"orders",
    b"R" + oid32(1) + string("public") + string("orders") + b"d" + int16(1) + int8(0) + b"column",
    b"M" + int8(1) + lsn64(1) + b"prefix",
], ids=["origin", "type_name", "type_namespace", "relation_namespace", "relation_name", "relation_column",
        "message_prefix"])
def test_unterminated_string(payload):
    with pytest.raises(ProtocolError, match="unterminated string"):
        decode(payload)


@pytest.mark.parametrize("payload", [
    b"O" + lsn64(1) + b"\xff\xfe\0",
    b"R" + oid32(1) + b"\xc3\0" + string("t") + b"d" + int16(0),
    b"Y" + oid32(1) + string("public") + b"\x80\0",
], ids=["origin", "relation", "type"])
def test_invalid_utf8_name(payload):
    with pytest.raises(ProtocolError):
        decode(payload)


def test_insert_without_new_marker():
    with pytest.raises(ProtocolError, match="Insert"):
        decode(b"I" + oid32(1) + b"K" + tuple_data([b"1"]))


def test_update_with_unexpected_marker():
    with pytest.raises(ProtocolError, match="Update"):
        decode(b"U" + oid32(1) + b"X" + tuple_data([b"1"]))


def test_update_old_tuple_not_followed_by_new_marker():
    with pytest.raises(ProtocolError, match="Update"):
        decode(b"U" + oid32(1) + b"K" + tuple_data([b"1"]) + b"K" + tuple_data([b"1"]))


@pytest.mark.parametrize("marker", [b"N", b"X"])
def test_delete_with_unexpected_marker(marker):
    with pytest.raises(ProtocolError, match="Delete"):
        decode(b"D" + oid32(1) + marker + tuple_data([b"1"]))


def test_message_content_shorter_than_declared():
    payload = b"M" + int8(0) + lsn64(1) + string("p") + int32(10) + b"short"
    with pytest.raises(ProtocolError, match="content shorter"):
        decode(payload)


def test_truncate_with_fewer_oids_than_declared():
    payload = b"T" + int32(3) + int8(0) + oid32(1) + oid32(2)
    with pytest.raises(ProtocolError):
        decode(payload)


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------

column_values = st.one_of(st.none(), st.just(UNCHANGED_TOAST), st.binary(max_size=200))


@settings(database=None, max_examples=300)
@given(oid=st.integers(0, 2**32 - 1), values=st.lists(column_values, max_size=60))
def test_insert_round_trips_random_tuples(oid, values):
    message = decode(insert_msg(oid, values))
    assert message == Insert(relation_oid=oid, new=tuple(values))


@settings(database=None, max_examples=300)
@given(new=st.lists(column_values, max_size=20), old=st.none() | st.lists(column_values, max_size=20),
       old_kind=st.sampled_from("KO"))
def test_update_round_trips_random_tuples(new, old, old_kind):
    message = decode(update_msg(3, new=new, old=old, old_kind=old_kind))
    expected_old = None if old is None else tuple(old)
    assert message == Update(relation_oid=3, new=tuple(new), old=expected_old,
                             old_is_key_only=old is not None and old_kind == "K")


@settings(database=None, max_examples=500)
@given(tag=st.sampled_from(b"BCORYIUDTM"), body=st.binary(max_size=80))
def test_arbitrary_bytes_decode_or_raise_protocol_error(tag, body):
    """Garbage after a valid tag never escapes as struct.error, IndexError, UnicodeDecodeError..."""
    with contextlib.suppress(ProtocolError):
        decode(bytes([tag]) + body)
