"""Row changes -> entity events, without a server: the mapping rules of docs/concepts/events.md."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.entities import EventBuilder, TransactionContext, compile_template
from cdc.errors import MappingError
from cdc.kafka import message_key
from cdc.pgoutput import UNCHANGED_TOAST, Column, Delete, Insert, Relation, Update
from models.events import ChangeEvent, camel_case, iso_utc, make_event_id
from models.settings import EntitySettings

COLUMNS = (("id", 23), ("organization_id", 25), ("packet_id", 23), ("content", 25), ("soft_removed", 16),
           ("secret_note", 25), ("created_at", 1184), ("updated_at", 1184))
RELATION = Relation(16384, "public", "packet_comments", "f",  # FULL: pgoutput flags every column as key
                    tuple(Column(name, oid, -1, True) for name, oid in COLUMNS))
DEFAULT_IDENTITY = Relation(16384, "public", "packet_comments", "d",  # the primary key (id) only
                            tuple(Column(name, oid, -1, name == "id") for name, oid in COLUMNS))
ENTITY = EntitySettings(table="packet_comments", entity_key="flows/comments",
                        entity_path="pipelinesPackets/{packet_id}/comments/{id}",
                        collection_path="pipelinesPackets/{packet_id}/comments", organization_column="organization_id",
                        create_time_column="created_at", update_time_column="updated_at",
                        exclude_columns=["secret_note"], property_names="camel_case")
TX = TransactionContext(xid=742, commit_lsn=0x16B374D848, commit_time_us=1_714_564_800_123_456)
ROW = (b"5", b"acme", b"7", b"hello", b"f", b"psst", b"2024-05-01 12:00:00+00", b"2024-05-01 12:00:01.5+00")


def builder(relation: Relation = RELATION, entity: EntitySettings = ENTITY) -> EventBuilder:
    events = EventBuilder([entity])
    events.on_relation(relation)
    return events


def test_insert_event_has_the_seed_shape_and_validates() -> None:
    event = builder().build(Insert(16384, ROW), TX, 3)
    assert event is not None
    parsed = ChangeEvent.model_validate(event)
    assert parsed.event_timestamp == "2024-05-01T12:00:00.123456Z"
    assert parsed.entity_path == "pipelinesPackets/7/comments/5"
    assert parsed.entity_id == "5"
    assert parsed.organization_id == "acme"
    assert parsed.event_id == "evt_00000016B374D848_000003"
    assert parsed.transaction.commit_lsn == "16/B374D848" and parsed.transaction.index == 3
    value = parsed.data.value
    assert value is not None and value.key == "pipelinesPackets/7/comments/5"
    assert value.properties == {"id": 5, "organizationId": "acme", "packetId": 7, "content": "hello",
                                "softRemoved": False, "createdAt": "2024-05-01T12:00:00Z",
                                "updatedAt": "2024-05-01T12:00:01.5Z"}
    assert value.create_time == "2024-05-01T12:00:00Z" and value.update_time == "2024-05-01T12:00:01.5Z"


def test_other_tables_are_ignored() -> None:
    events = builder()
    events.on_relation(Relation(99, "public", "audit", "d", (Column("id", 23, -1, True),)))
    assert events.build(Insert(99, (b"1",)), TX, 0) is None


def test_update_mask_lists_changed_properties_only() -> None:
    new = (b"5", b"acme", b"7", b"edited", b"t", b"other secret", ROW[6], ROW[7])
    event = builder().build(Update(16384, new, ROW, False), TX, 0)
    assert event is not None
    assert event["data"]["updateMask"] == ["content", "softRemoved"]  # secret_note is excluded
    assert event["data"]["oldValue"]["properties"]["content"] == "hello"


def test_unchanged_toast_is_filled_from_the_full_old_row() -> None:
    new = (b"5", b"acme", b"7", UNCHANGED_TOAST, b"t", None, ROW[6], ROW[7])
    event = builder().build(Update(16384, new, ROW, False), TX, 0)
    assert event is not None
    assert event["data"]["value"]["properties"]["content"] == "hello"
    assert event["data"]["updateMask"] == ["softRemoved"]


def test_without_full_identity_old_value_is_the_key_and_mask_is_null() -> None:
    key_only = (b"5", None, None, None, None, None, None, None)
    new = (b"5", b"acme", b"7", UNCHANGED_TOAST, b"t", None, ROW[6], ROW[7])
    event = builder(DEFAULT_IDENTITY).build(Update(16384, new, key_only, True), TX, 0)
    assert event is not None
    assert event["data"]["updateMask"] is None
    assert "content" not in event["data"]["value"]["properties"]  # unknown, so absent - never null
    delete = builder(DEFAULT_IDENTITY).build(Delete(16384, key_only, True), TX, 1)
    assert delete is not None and delete["data"]["oldValue"]["properties"] == {"id": 5}


def test_update_without_old_row_has_null_old_value_and_mask() -> None:
    event = builder().build(Update(16384, ROW, None, False), TX, 0)
    assert event is not None and event["data"]["oldValue"] is None and event["data"]["updateMask"] is None


def test_delete_carries_the_old_row() -> None:
    event = builder().build(Delete(16384, ROW, False), TX, 0)
    assert event is not None
    assert event["operationType"] == "deleted" and event["data"]["value"] is None
    assert event["data"]["oldValue"]["properties"]["content"] == "hello"


def test_a_template_naming_a_missing_column_is_refused_with_names() -> None:
    entity = ENTITY.model_copy(update={"entity_path": "packets/{packet}/comments/{id}"})
    with pytest.raises(MappingError, match=r"packet_comments: column\(s\) packet named in the mapping do not exist"):
        EventBuilder([entity]).on_relation(RELATION)


def test_schema_change_recompiles_the_mapping() -> None:
    events = builder()
    wider = Relation(16384, "public", "packet_comments", "f",
                     (*RELATION.columns, Column("priority", 21, -1, False)))
    events.on_relation(wider)
    event = events.build(Insert(16384, (*ROW, b"3")), TX, 0)
    assert event is not None and event["data"]["value"]["properties"]["priority"] == 3


def test_null_organization_is_null() -> None:
    row = (ROW[0], None, *ROW[2:])
    event = builder().build(Insert(16384, row), TX, 0)
    assert event is not None and event["organizationId"] is None


def test_helpers() -> None:
    assert camel_case("soft_removed_at") == "softRemovedAt" and camel_case("id") == "id"
    assert iso_utc(0) == "1970-01-01T00:00:00.000000Z"


values = st.one_of(st.none(), st.binary(max_size=8))


@given(old=st.lists(values, min_size=3, max_size=3), new=st.lists(st.one_of(values, st.just(UNCHANGED_TOAST)),
                                                                  min_size=3, max_size=3))
def test_update_mask_property(old: list[bytes | None], new: list[object]) -> None:
    """The mask is exactly the columns whose sent value differs from the old one."""
    relation = Relation(1, "public", "t", "f", tuple(Column(f"c{i}", 17, -1, True) for i in range(3)))
    entity = EntitySettings(table="t", entity_key="t", entity_path="t/{c0}", collection_path="t")
    events = EventBuilder([entity])
    events.on_relation(relation)
    mapping = events.mapping(1)
    assert mapping is not None
    mask = mapping.update_mask(tuple(old), tuple(new))  # type: ignore[arg-type]
    expected = [f"c{i}" for i in range(3) if new[i] is not UNCHANGED_TOAST and new[i] != old[i]]
    assert mask == expected


@pytest.mark.parametrize(("template", "expected"), [
    ("items", "items"), ("{id}", "5"), ("items/{id}", "items/5"), ("o/{org}/i/{id}", "o/acme/i/5"),
    ("{{literal}}/{id}", "{literal}/5"), ("{org}{id}", "acme5"),
])
def test_compiled_templates_fill_columns_by_position(template: str, expected: str) -> None:
    assert compile_template(template, ["id", "org"])([5, "acme"]) == expected


def test_the_transaction_formats_event_ids_like_make_event_id() -> None:
    assert [TX.event_id(n) for n in (0, 7, 123456)] == [make_event_id(TX.commit_lsn, n) for n in (0, 7, 123456)]


MOVED = (b"5", b"globex", b"7", b"hello", b"f", b"psst", ROW[6], b"2024-05-01 12:00:09+00")


def test_a_row_moved_to_another_organization_is_deleted_there_and_created_here() -> None:
    left, joined = builder().build(Update(16384, MOVED, ROW, False), TX, 2)  # type: ignore[misc]
    assert (left["operationType"], left["organizationId"], joined["operationType"], joined["organizationId"]) == (
        "deleted", "acme", "created", "globex")
    assert left["data"]["value"] is None and left["data"]["updateMask"] is None
    assert left["data"]["oldValue"]["properties"]["organizationId"] == "acme"
    assert joined["data"]["oldValue"] is None and joined["data"]["updateMask"] is None
    assert joined["data"]["value"]["properties"]["organizationId"] == "globex"
    assert "acme" not in orjson.dumps(joined).decode()  # nothing of the old organization reaches the new one
    assert (left["eventId"], joined["eventId"]) == ("evt_00000016B374D848_000002", "evt_00000016B374D848_000002_moved")
    assert left["transaction"] == joined["transaction"]
    assert (message_key(left), message_key(joined)) == (b"acme|pipelinesPackets/7/comments/5",
                                                        b"globex|pipelinesPackets/7/comments/5")
    assert all(ChangeEvent.model_validate(event) for event in (left, joined))


def test_a_move_reads_the_same_twice() -> None:
    first = builder().build(Update(16384, MOVED, ROW, False), TX, 2)
    assert first == builder().build(Update(16384, MOVED, ROW, False), TX, 2)


def test_an_update_within_the_organization_stays_one_event() -> None:
    same = (b"5", b"acme", b"8", b"hello", b"f", b"psst", ROW[6], ROW[7])
    event = builder().build(Update(16384, same, ROW, False), TX, 0)
    assert isinstance(event, dict) and event["operationType"] == "updated" and event["data"]["updateMask"] == [
        "packetId"]


def test_a_move_is_seen_without_full_identity_when_the_key_holds_the_organization() -> None:
    keyed = Relation(16384, "public", "packet_comments", "d",
                     tuple(Column(name, oid, -1, name in ("id", "organization_id")) for name, oid in COLUMNS))
    key_only = (b"5", b"acme", None, None, None, None, None, None)
    left, joined = builder(keyed).build(Update(16384, MOVED, key_only, True), TX, 0)  # type: ignore[misc]
    assert (left["organizationId"], left["data"]["oldValue"]["properties"]) == ("acme", {
        "id": 5, "organizationId": "acme"})
    assert joined["organizationId"] == "globex" and joined["data"]["oldValue"] is None


def test_without_an_old_row_a_move_cannot_be_seen_and_is_one_update() -> None:
    # DEFAULT identity, organization not in the key: Postgres sends no old row unless the key changes.
    event = builder(DEFAULT_IDENTITY).build(Update(16384, MOVED, None, False), TX, 0)
    assert isinstance(event, dict) and event["organizationId"] == "globex" and event["data"]["oldValue"] is None
    key_change = (b"6", b"globex", b"7", b"hello", b"f", b"psst", ROW[6], ROW[7])
    event = builder(DEFAULT_IDENTITY).build(Update(16384, key_change, (b"5", *[None] * 7), True), TX, 0)
    assert isinstance(event, dict) and event["operationType"] == "updated"
    assert event["data"]["oldValue"]["properties"] == {"id": 5}  # the old key only: no other value of the old row
