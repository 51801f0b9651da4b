"""Sample payloads: example events per entity and operation, and sending one to an integration."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from cdc.entities import EventBuilder, TransactionContext, read_event, stamp_read
from cdc.pgoutput import Column, Delete, Insert, Relation, Update
from control.sample import SAMPLE_BODY_CAP, SampleResult, response_text, send_sample
from models.errors import NotFound
from models.events import ChangeEvent, camel_case
from models.samples import EVENT_OPERATIONS, SAMPLE_OPERATIONS, catalogue, example_event, named_columns
from models.settings import EntitySettings
from publisher.sending.sender import AttemptResult, WebhookSender
from publisher.sending.ssrf import DestinationPolicy
from publisher.store import Integration, Store
from tests.receivers import ScriptedReceiver, always

NOW_US = 1_714_564_800_123_456  # 2024-05-01T12:00:00.123456Z
COMMENTS = EntitySettings(table="packet_comments", entity_key="flows/comments",
                          entity_path="pipelinesPackets/{packet_id}/comments/{id}",
                          collection_path="pipelinesPackets/{packet_id}/comments",
                          organization_column="organization_id", create_time_column="created_at",
                          update_time_column="updated_at")
STYLES = ("as_is", "camel_case")
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def comments(style: str = "as_is", **changes: Any) -> EntitySettings:
    return COMMENTS.model_copy(update={"property_names": style, **changes})


def styled(entity: EntitySettings, name: str) -> str:
    return camel_case(name) if entity.property_names == "camel_case" else name


# Example events


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("operation", SAMPLE_OPERATIONS)
def test_example_event_has_the_event_shape(operation: str, style: str) -> None:
    entity = comments(style)
    event = example_event(entity, operation, "acme", now_us=NOW_US)
    parsed = ChangeEvent.model_validate(event)
    assert list(event) == ["eventTimestamp", "operationType", "entityPath", "entityId", "entityKey", "collectionPath",
                           "organizationId", "data", "eventId", "transaction"]
    assert parsed.operation_type == operation and parsed.entity_key == "flows/comments"
    assert parsed.event_timestamp == "2024-05-01T12:00:00.123456Z"
    assert parsed.entity_path == "pipelinesPackets/123/comments/124"  # every placeholder filled, ids are numbers
    assert parsed.entity_id == "124" and parsed.collection_path == "pipelinesPackets/123/comments"
    assert parsed.organization_id == "acme"
    assert parsed.event_id == f"evt_sample_{operation}" and "." not in parsed.event_id
    assert event["transaction"] == {"id": 0, "commitLsn": "0/0", "index": 0}
    states = [state for state in (parsed.data.value, parsed.data.old_value) if state is not None]
    assert states
    for state in states:
        assert state.key == parsed.entity_path
        assert set(state.properties) == {styled(entity, name) for name in
                                         ("packet_id", "id", "organization_id", "created_at", "updated_at")}
        assert state.properties[styled(entity, "organization_id")] == "acme"
        assert state.create_time == state.properties[styled(entity, "created_at")]
        assert state.update_time == state.properties[styled(entity, "updated_at")]
        assert state.create_time and ISO_UTC.fullmatch(state.create_time)
        assert state.update_time and ISO_UTC.fullmatch(state.update_time)


@pytest.mark.parametrize("style", STYLES)
def test_created_has_no_old_value(style: str) -> None:
    data = ChangeEvent.model_validate(example_event(comments(style), "created", now_us=NOW_US)).data
    assert data.value is not None and data.old_value is None and data.update_mask is None
    assert data.value.create_time == data.value.update_time == "2024-05-01T12:00:00.123456Z"


@pytest.mark.parametrize("style", STYLES)
def test_deleted_has_no_value_and_carries_the_old_row(style: str) -> None:
    event = example_event(comments(style), "deleted", now_us=NOW_US)
    assert event["data"]["value"] is None and event["data"]["updateMask"] is None
    old = ChangeEvent.model_validate(event).data.old_value
    assert old is not None and old.update_time == "2024-05-01T11:00:00.123456Z"  # last written an hour earlier


@pytest.mark.parametrize("style", STYLES)
def test_updated_mask_is_a_subset_of_properties_and_lists_exactly_what_changed(style: str) -> None:
    entity = comments(style)
    data = ChangeEvent.model_validate(example_event(entity, "updated", now_us=NOW_US)).data
    assert data.value is not None and data.old_value is not None and data.update_mask
    assert set(data.update_mask) <= set(data.value.properties)
    changed = {name for name in data.value.properties
               if data.value.properties[name] != data.old_value.properties[name]}
    assert changed == set(data.update_mask) == {styled(entity, "updated_at")}
    assert data.value.update_time == "2024-05-01T12:00:00.123456Z"
    assert data.old_value.update_time == "2024-05-01T11:00:00.123456Z"
    assert data.value.create_time == data.old_value.create_time


def test_updated_without_an_update_time_changes_the_first_property_outside_the_key() -> None:
    entity = EntitySettings(table="docs", entity_key="docs", entity_path="orgs/{org_slug}/docs/{doc_id}",
                            collection_path="orgs/{org_slug}/docs", entity_id="{doc_id}-{version}",
                            property_names="camel_case")
    event = example_event(entity, "updated", now_us=NOW_US)
    assert event["data"]["updateMask"] == ["version"]
    assert event["data"]["oldValue"]["properties"] == {"orgSlug": "example", "docId": 123, "version": "example"}
    assert event["data"]["value"]["properties"]["version"] != "example"
    assert event["entityPath"] == "orgs/example/docs/123"  # strings for names that are not ids


def test_updated_with_only_key_columns_has_an_empty_mask() -> None:
    entity = EntitySettings(table="docs", entity_key="docs", entity_path="docs/{id}", collection_path="docs")
    event = example_event(entity, "updated", now_us=NOW_US)
    ChangeEvent.model_validate(event)
    assert event["data"]["updateMask"] == [] and event["data"]["value"] == event["data"]["oldValue"]


def test_names_that_merely_end_in_id_are_not_numbers() -> None:
    entity = EntitySettings(table="t", entity_key="t", entity_path="t/{uuid}/u/{userId}/x/{ID}", collection_path="t")
    assert example_event(entity, "created", now_us=NOW_US)["entityPath"] == "t/example/u/123/x/124"


def test_no_time_columns_give_null_times_and_excluded_columns_stay_out_of_properties() -> None:
    entity = comments("camel_case", create_time_column=None, update_time_column=None,
                      exclude_columns=["organization_id"])
    value = example_event(entity, "created", "acme", now_us=NOW_US)["data"]["value"]
    assert value["createTime"] is None and value["updateTime"] is None
    assert value["properties"] == {"packetId": 123, "id": 124}


def test_organization_column_used_in_a_template_holds_the_organization() -> None:
    entity = comments(entity_path="orgs/{organization_id}/comments/{id}", collection_path="orgs/{organization_id}")
    event = example_event(entity, "created", "acme", now_us=NOW_US)
    assert event["entityPath"] == "orgs/acme/comments/123" and event["collectionPath"] == "orgs/acme"


def test_escaped_braces_stay_literal() -> None:
    entity = EntitySettings(table="t", entity_key="t", entity_path="t/{{raw}}/{id}", collection_path="t")
    assert example_event(entity, "created", now_us=NOW_US)["entityPath"] == "t/{raw}/123"


@pytest.mark.parametrize("operation", ["truncated", "inserted", "", "Created"])
def test_unknown_operation_raises(operation: str) -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        example_event(COMMENTS, operation)


def test_a_path_without_columns_needs_an_entity_id() -> None:
    entity = EntitySettings(table="t", entity_key="t", entity_path="singleton", collection_path="t")
    with pytest.raises(ValueError, match="set entity_id"):
        example_event(entity, "created")
    assert example_event(entity.model_copy(update={"entity_id": "one"}), "created")["entityId"] == "one"


def test_default_time_is_now() -> None:
    assert ISO_UTC.fullmatch(example_event(COMMENTS, "created")["eventTimestamp"])


def relation_for(entity: EntitySettings, row: dict[str, Any]) -> Relation:
    columns = tuple(Column(name, 23 if isinstance(row[name], int) else 25, -1, True) for name in row)
    return Relation(1, "public", entity.table.split(".")[-1], "f", columns)


def raw(row: dict[str, Any]) -> tuple[bytes, ...]:
    return tuple(str(value).encode() for value in row.values())


def unstyled(entity: EntitySettings, properties: dict[str, Any]) -> dict[str, Any]:
    return {name: properties[styled(entity, name)] for name in named_columns(entity)}


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("operation", SAMPLE_OPERATIONS)
def test_an_example_is_what_the_capture_side_builds_from_the_same_row(operation: str, style: str) -> None:
    """Feed the example's rows through the real ``EventBuilder``: everything but the ids must agree."""
    entity = comments(style)
    sample = example_event(entity, operation, "acme", now_us=NOW_US)
    new = sample["data"]["value"] and unstyled(entity, sample["data"]["value"]["properties"])
    old = sample["data"]["oldValue"] and unstyled(entity, sample["data"]["oldValue"]["properties"])
    builder = EventBuilder([entity])
    builder.on_relation(relation_for(entity, new or old))
    change = (Insert(1, raw(new)) if operation == "created" else Update(1, raw(new), raw(old), False)
              if operation == "updated" else Delete(1, raw(old), False))
    real = builder.build(change, TransactionContext(1, 0x10, NOW_US), 0)
    assert real is not None
    ignored = {"eventId", "transaction"}
    assert {k: v for k, v in real.items() if k not in ignored} == {k: v for k, v in sample.items() if k not in ignored}


@pytest.mark.parametrize("style", STYLES)
def test_a_read_example_is_what_a_backfill_builds_from_the_same_row(style: str) -> None:
    entity = comments(style)
    sample = example_event(entity, "read", "acme", now_us=NOW_US)
    row = unstyled(entity, sample["data"]["value"]["properties"])
    builder = EventBuilder([entity])
    builder.on_relation(relation_for(entity, row))
    mapping = builder.mapping(1)
    assert mapping is not None
    real = read_event(mapping, mapping.decode_row(raw(row)))
    stamp_read(real, TransactionContext(1, 0x10, NOW_US), "evt_1", 0)
    ignored = {"eventId", "transaction"}
    assert {k: v for k, v in real.items() if k not in ignored} == {k: v for k, v in sample.items() if k not in ignored}
    assert sample["operationType"] == "read" and sample["data"]["oldValue"] is None and "read" in EVENT_OPERATIONS


def test_catalogue_lists_every_entity_with_an_example_per_operation() -> None:
    docs = EntitySettings(table="docs", entity_key="docs", entity_path="docs/{id}", collection_path="docs")
    *entries, operational = catalogue([COMMENTS, docs], "acme", now_us=NOW_US)
    assert [entry["entityKey"] for entry in entries] == ["flows/comments", "docs"]
    for entry, entity in zip(entries, [COMMENTS, docs], strict=True):
        assert entry["operations"] == ["created", "updated", "deleted", "read"]
        assert list(entry["examples"]) == entry["operations"]
        for operation, example in entry["examples"].items():
            assert example == example_event(entity, operation, "acme", now_us=NOW_US)
    assert operational["entityKey"] == "walhook/operational" and "integration.disabled" in operational["operations"]
    assert all(example["organizationId"] == "acme" and example["operationType"] == kind
               for kind, example in operational["examples"].items())
    assert [entry["entityKey"] for entry in catalogue([])] == ["walhook/operational"]


# Sending, without a server


class FakeStore:
    def __init__(self, integration: Integration | None = None) -> None:
        self._integration = integration

    async def integration(self, integration_id: int) -> Integration:
        if self._integration is None or self._integration.id != integration_id:
            raise NotFound(f"integration {integration_id} does not exist")
        return self._integration


class FakeSender:
    def __init__(self, result: AttemptResult) -> None:
        self.result = result
        self.calls: list[tuple[str, list[str], str, bytes, dict[str, str] | None]] = []

    async def attempt(self, url: str, secrets: list[str], msg_id: str, body: bytes,
                      extra_headers: dict[str, str] | None = None, organization: str = "") -> AttemptResult:
        self.calls.append((url, secrets, msg_id, body, extra_headers))
        return self.result


INTEGRATION = Integration(id=7, organization_id="acme", name="hook", url="https://hooks.example/in", subscriptions=[],
                          secrets=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], headers={"authorization": "Bearer t"})


async def test_send_sample_signs_with_the_integration_secrets_and_headers() -> None:
    sender = FakeSender(AttemptResult(202, 0.0125, None, b"thanks", {"x-request-id": "r1"}))
    result = await send_sample(FakeStore(INTEGRATION), sender, 7, COMMENTS, "updated")  # type: ignore[arg-type]
    ((url, secrets, msg_id, body, headers),) = sender.calls
    assert (url, secrets, headers) == (INTEGRATION.url, INTEGRATION.secrets, INTEGRATION.headers)
    assert re.fullmatch(r"sample_updated_7_\d{13}", msg_id) and msg_id == result.webhook_id
    assert orjson.loads(body) == result.payload
    assert result.payload["organizationId"] == "acme" and result.payload["operationType"] == "updated"
    assert (result.status, result.body, result.headers, result.error) == (202, "thanks", {"x-request-id": "r1"}, None)
    assert result.duration_ms == pytest.approx(12.5) and result.succeeded


async def test_send_sample_reports_no_answer_without_raising() -> None:
    sender = FakeSender(AttemptResult(None, 2.0, "timed out after 2s"))
    result = await send_sample(FakeStore(INTEGRATION), sender, 7, COMMENTS, "created")  # type: ignore[arg-type]
    assert (result.status, result.error, result.body, result.headers) == (None, "timed out after 2s", "", {})
    assert not result.succeeded


async def test_send_sample_refuses_an_unknown_operation_before_any_io() -> None:
    sender = FakeSender(AttemptResult(204, 0.0))
    with pytest.raises(ValueError, match="unknown operation"):
        await send_sample(FakeStore(), sender, 7, COMMENTS, "truncated")  # type: ignore[arg-type]
    assert sender.calls == []


def test_response_text_is_capped_and_tolerates_bad_utf8() -> None:
    assert response_text(b"x" * 10_000) == "x" * SAMPLE_BODY_CAP
    assert response_text(b"ok \xff") == "ok \ufffd"
    cut = b"x" * (SAMPLE_BODY_CAP - 1) + "é".encode() + b"tail"  # the cap splits the two-byte character
    assert response_text(cut) == "x" * (SAMPLE_BODY_CAP - 1)
    assert response_text("é".encode() * 10) == "é" * 10


# Sending on the real stack: Postgres store, real HTTP, signatures verified by the receiver


@contextlib.asynccontextmanager
async def integration_for(database: str, receiver: ScriptedReceiver, path: str
                          ) -> AsyncIterator[tuple[Store, int]]:
    async with Store(database) as store:
        receiver.secrets[path] = await store.add_organization("acme")
        yield store, await store.add_integration("acme", receiver.url(path), ["flows/comments:*"])


def loopback_sender() -> WebhookSender:
    return WebhookSender(timeout=5, policy=DestinationPolicy.from_strings(["127.0.0.1/32"]))


async def test_sample_reaches_the_receiver_signed_and_records_nothing(database: str) -> None:
    async with ScriptedReceiver(scripts={"hook": always(202, body=b"thanks", headers={"x-seen": "1"})}) as receiver, \
            integration_for(database, receiver, "hook") as (store, integration_id), loopback_sender() as sender:
        result = await send_sample(store, sender, integration_id, COMMENTS, "created")
        deliveries = await store.deliveries()
    assert isinstance(result, SampleResult)
    assert (result.status, result.body, result.error) == (202, "thanks", None)
    assert result.headers["x-seen"] == "1" and result.duration_ms > 0
    (hit,) = receiver.verified("hook")  # the signature verified with the organization's secret
    assert hit.webhook_id == result.webhook_id and "." not in hit.webhook_id
    assert hit.event == result.payload
    ChangeEvent.model_validate(hit.event)
    assert deliveries == []  # a sample is not a real event


async def test_an_error_answer_is_reported_not_raised(database: str) -> None:
    async with ScriptedReceiver(scripts={"down": always(500, body=b"boom \xff" + b"x" * 10_000)}) as receiver, \
            integration_for(database, receiver, "down") as (store, integration_id), loopback_sender() as sender:
        result = await send_sample(store, sender, integration_id, COMMENTS, "deleted")
        deliveries = await store.deliveries()
    assert result.status == 500 and not result.succeeded and result.error is None
    assert result.body.startswith("boom \ufffdx") and len(result.body) == SAMPLE_BODY_CAP
    assert result.payload["data"]["value"] is None
    assert len(receiver.verified("down")) == 1 and deliveries == []


async def test_the_ssrf_policy_applies_to_samples(database: str) -> None:
    async with ScriptedReceiver() as receiver, integration_for(database, receiver, "hook") as (store, integration_id), \
            WebhookSender(timeout=5) as sender:
        result = await send_sample(store, sender, integration_id, COMMENTS, "created")
    assert result.status is None and result.error is not None and "SSRF" in result.error
    assert receiver.hits == []


async def test_an_unknown_integration_raises_not_found(database: str) -> None:
    async with Store(database) as store, loopback_sender() as sender:
        with pytest.raises(NotFound):
            await send_sample(store, sender, 424242, COMMENTS, "created")
