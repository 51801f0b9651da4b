"""The compiled row path writes exactly the reference path's bytes: event JSON, key and headers.

Rows of every supported type are generated in the text forms Postgres sends (and in odd ones it
could), for inserts, updates (full old row, key-only old row, no old row, unchanged TOAST values)
and deletes, under mappings with templates over several types, excluded columns, camelCase names
and organization / create / update time columns. Where the compiled path declines a row (returns
None) the reference path takes it, so the property is: whenever it answers, the bytes are equal;
and for the common forms it must answer.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc.entities import EventBuilder, TransactionContext
from cdc.errors import MappingError
from cdc.pgoutput import UNCHANGED_TOAST, decode
from cdc.rowpath import COMPILED_AVAILABLE, RowEncoder, encode_reference, use_compiled
from models.settings import EntitySettings
from tests.test_pgoutput import delete_msg, insert_msg, relation_msg, update_msg

pytestmark = pytest.mark.skipif(not COMPILED_AVAILABLE, reason="the compiled row path was not built (no C compiler)")

RELATION_OID = 16_500
_text = st.text(st.characters(exclude_characters="\0", codec="utf-8"), max_size=12)
_word = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=6)


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value) if value != int(value) or abs(value) >= 1e16 else f"{value:.17g}"


def _array(elements: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    flat = st.lists(st.one_of(elements, st.just("NULL")), max_size=4).map(lambda items: "{" + ",".join(items) + "}")
    quoted = st.lists(_text, min_size=1, max_size=3).map(
        lambda items: "{" + ",".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items) + "}")
    nested = st.lists(elements, min_size=2, max_size=2).map(lambda items: "{{" + ",".join(items) + "}}")
    return st.one_of(flat, quoted, nested)


_timestamp = st.datetimes().map(lambda moment: moment.isoformat(sep=" "))
_timestamps = st.one_of(_timestamp, st.sampled_from(["infinity", "-infinity", "0044-03-15 12:00:00 BC"]))
_ints = st.integers(-(2**63), 2**63 - 1).map(str)

# type oid -> the Postgres text forms of its values (str, or bytes for ones that are not UTF-8)
TYPES: dict[int, st.SearchStrategy[Any]] = {
    25: st.one_of(_text, st.just(b"\xff\xfeno")),
    1043: _text,
    20: _ints, 23: st.integers(-(2**31), 2**31 - 1).map(str), 21: st.integers(-32768, 32767).map(str),
    26: st.integers(0, 2**32 - 1).map(str),
    16: st.sampled_from(["t", "f"]),
    701: st.floats().map(_float_text), 700: st.floats(width=32).map(_float_text),
    1700: st.decimals(allow_nan=False, places=3).map(str),
    17: st.binary(max_size=8).map(lambda raw: "\\x" + raw.hex()),
    3802: st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | _text,
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_word, inner, max_size=3),
                       max_leaves=6).map(lambda value: orjson.dumps(value).decode()),
    114: st.just('{"a": [1, 2.5, "x"]}'),
    1114: _timestamps,
    1184: st.one_of(_timestamp.map(lambda text: text + "+00"), _timestamps.map(lambda text: text + "+05:30"),
                    st.just("infinity")),
    1082: st.dates().map(str), 2950: st.uuids().map(str),
    1009: _array(_word), 1007: _array(st.integers(-100, 100).map(str)), 1022: _array(st.sampled_from(["1.5", "2"])),
    1000: _array(st.sampled_from(["t", "f"])), 1185: _array(st.just('"2024-05-01 12:00:00+00"')),
    600: st.just("(1,2)"),
}
TEMPLATE_TYPES = [25, 20, 23, 16, 701, 1184, 1700]


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[tuple[str, int]], EntitySettings]:
    extra = draw(st.lists(st.sampled_from(sorted(TYPES)), max_size=8))
    columns = [("org_id", 25), ("id", draw(st.sampled_from(TEMPLATE_TYPES)))]
    columns += [(f"col_{i}_{oid}", oid) for i, oid in enumerate(extra)]
    names = [name for name, _ in columns]
    created = next((name for name, oid in columns if oid == 1184), None)
    entity = EntitySettings(
        table="public.things", entity_key=draw(st.sampled_from(["things", 'th"ings'])),
        entity_path=draw(st.sampled_from(["orgs/{org_id}/things/{id}", "things/{id}", "t/{{x}}/{id}"])),
        collection_path=draw(st.sampled_from(["orgs/{org_id}/things", "things"])),
        organization_column=draw(st.sampled_from([None, "org_id"])),
        create_time_column=created, update_time_column=draw(st.sampled_from([None, created])),
        exclude_columns=draw(st.lists(st.sampled_from(names[2:]), max_size=2)) if len(names) > 2 else [],
        property_names=draw(st.sampled_from(["as_is", "camel_case"])))
    return columns, entity


def _raw(value: Any) -> Any:
    return value if value is None or value is UNCHANGED_TOAST or isinstance(value, bytes) else value.encode()


@st.composite
def rows(draw: st.DrawFn, columns: list[tuple[str, int]], toast: bool = False) -> list[Any]:
    row = []
    for _, oid in columns:
        choices = [TYPES[oid], st.none()] if not toast else [TYPES[oid], st.none(), st.just(UNCHANGED_TOAST)]
        row.append(_raw(draw(st.one_of(*choices))))
    return row


def _builder(columns: list[tuple[str, int]], entity: EntitySettings) -> EventBuilder:
    builder = EventBuilder([entity])
    key = [1, 1] + [0] * (len(columns) - 2)
    builder.on_relation(decode(relation_msg(RELATION_OID, "public", "things", "f",
                                            [(k, name, oid, -1) for k, (name, oid) in zip(key, columns, strict=True)])))
    return builder


@st.composite
def changes(draw: st.DrawFn) -> tuple[EventBuilder, bytes]:
    columns, entity = draw(tables())
    new = draw(rows(columns))
    old = draw(rows(columns, toast=False))
    key_only = [old[0], old[1]] + [None] * (len(columns) - 2)
    kind = draw(st.sampled_from(["insert", "update_full", "update_key", "update_plain", "update_toast",
                                 "delete_full", "delete_key"]))
    payload = {
        "insert": lambda: insert_msg(RELATION_OID, new),
        "update_full": lambda: update_msg(RELATION_OID, new, old, "O"),
        "update_key": lambda: update_msg(RELATION_OID, new, key_only, "K"),
        "update_plain": lambda: update_msg(RELATION_OID, new),
        "update_toast": lambda: update_msg(RELATION_OID, draw(rows(columns, toast=True)), old, "O"),
        "delete_full": lambda: delete_msg(RELATION_OID, old, "O"),
        "delete_key": lambda: delete_msg(RELATION_OID, key_only, "K"),
    }[kind]()
    return _builder(columns, entity), payload


TX = TransactionContext(xid=4_000_000_123, commit_lsn=0x16B374D848, commit_time_us=1_714_564_800_123_456)


def _reference(builder: EventBuilder, payload: bytes, index: int) -> Any:
    try:
        return encode_reference(builder, payload, TX, index, "production")
    except MappingError:
        return MappingError
    except orjson.JSONEncodeError:
        return orjson.JSONEncodeError


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(changes(), st.integers(0, 2_000_000))
def test_compiled_path_writes_the_reference_bytes(change: tuple[EventBuilder, bytes], index: int) -> None:
    builder, payload = change
    compiled = RowEncoder(builder, "production").encode(payload, TX, index)
    reference = _reference(builder, payload, index)
    if compiled is not None:
        assert [compiled] == reference


COMMON = [("org_id", 25), ("id", 20), ("name", 25), ("price", 1700), ("ratio", 701), ("active", 16),
          ("tags", 1009), ("doc", 3802), ("at", 1184), ("seen", 1114), ("n", 23)]
COMMON_ROW = [b"org-1", b"42", b'say "hi"\n\xc3\xa9', b"12.50", b"1e-07", b"t", b"{a,NULL,b}", b'{"k": [1]}',
              b"2024-05-01 12:00:00.5+00", b"2024-05-01 12:00:00", b"-7"]


@pytest.mark.parametrize("kind", ["insert", "update_full", "update_key", "delete_full"])
def test_common_forms_take_the_compiled_path(kind: str) -> None:
    """Without this the property above would hold for a compiled path that declines everything."""
    entity = EntitySettings(table="public.things", entity_key="things", entity_path="orgs/{org_id}/things/{id}",
                            collection_path="orgs/{org_id}/things", organization_column="org_id",
                            create_time_column="at", update_time_column="at", property_names="camel_case")
    builder = _builder(COMMON, entity)
    changed = [*COMMON_ROW[:2], b"other", *COMMON_ROW[3:]]
    payload = {"insert": insert_msg(RELATION_OID, COMMON_ROW),
               "update_full": update_msg(RELATION_OID, changed, COMMON_ROW, "O"),
               "update_key": update_msg(RELATION_OID, changed, [*COMMON_ROW[:2]] + [None] * 9, "K"),
               "delete_full": delete_msg(RELATION_OID, COMMON_ROW, "O")}[kind]
    compiled = RowEncoder(builder).encode(payload, TX, 7)
    assert compiled is not None
    assert [compiled] == encode_reference(builder, payload, TX, 7)
    assert orjson.loads(compiled[1])["data"]["value" if kind != "delete_full" else "oldValue"]["properties"]["tags"] \
        == ["a", None, "b"]


@pytest.mark.parametrize("ratio", [b"6.103515625e-05", b"1e-05", b"-2.5e-05", b"9.999999999999999e-05", b"0.0001",
                                   b"1e-07", b"-1.5e-06", b"1.5e+16", b"123.25", b"NaN", b"-Infinity"])
def test_floats_are_written_as_orjson_writes_them(ratio: bytes) -> None:
    """orjson writes exponent -5 in decimal (0.00006103515625) where Python's repr has 6.103515625e-05."""
    entity = EntitySettings(table="public.things", entity_key="things", entity_path="orgs/{org_id}/things/{id}",
                            collection_path="orgs/{org_id}/things", organization_column="org_id")
    payload = insert_msg(RELATION_OID, [*COMMON_ROW[:4], ratio, *COMMON_ROW[5:]])
    compiled = RowEncoder(_builder(COMMON, entity)).encode(payload, TX, 7)
    assert compiled is not None  # the row as a whole still takes the compiled path
    assert [compiled] == encode_reference(_builder(COMMON, entity), payload, TX, 7)


@pytest.mark.parametrize("identity", ["O", "K"])
def test_a_row_moved_to_another_organization_takes_the_reference_path(identity: str) -> None:
    """Two events (deleted there, created here) are the reference path's to write."""
    entity = EntitySettings(table="public.things", entity_key="things", entity_path="orgs/{org_id}/things/{id}",
                            collection_path="things", organization_column="org_id")
    builder = _builder(COMMON, entity)  # org_id is a key column here, so a key-only old row shows the move
    moved = [b"org-2", *COMMON_ROW[1:]]
    old = COMMON_ROW if identity == "O" else [*COMMON_ROW[:2]] + [None] * 9
    payload = update_msg(RELATION_OID, moved, old, identity)
    assert RowEncoder(builder).encode(payload, TX, 7) is None
    left, joined = (orjson.loads(value) for _, value, _ in encode_reference(builder, payload, TX, 7))
    assert (left["operationType"], left["organizationId"], joined["organizationId"]) == ("deleted", "org-1", "org-2")
    same_org = update_msg(RELATION_OID, [*COMMON_ROW[:2], b"renamed", *COMMON_ROW[3:]], old, identity)
    assert [RowEncoder(builder).encode(same_org, TX, 7)] == encode_reference(builder, same_org, TX, 7)


def test_row_path_setting() -> None:
    assert use_compiled("auto") is COMPILED_AVAILABLE
    assert use_compiled("python") is False
    assert use_compiled("compiled") is True
