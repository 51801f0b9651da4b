"""Conditions in routing, checked against the entities' columns, through the API and the store.

Routing is pure (parse once, evaluate each integration's compiled conditions); the column checks
read a real table's catalog; the API answers 422 naming the property; the store counts filtered
events per integration.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from starlette.testclient import TestClient

from control.api.app import create_app
from control.columns import entity_shapes
from models.samples import as_if, example_event
from models.settings import EntitySettings, Settings
from publisher.errors import SubscriptionError
from publisher.routing.conditions import NO_CHANGE, ConditionError
from publisher.routing.matching import check_conditions, parse_item, parse_items
from publisher.routing.recipients import delivery_of, parse_event, receives, route
from publisher.routing.shapes import Column, shape_of
from publisher.store import Integration, Store

APPROVED = {"subscription": "flows/packets:updated", "when": {"property": "status", "to": "approved"}}
PACKETS = EntitySettings(table="public.packets", entity_key="flows/packets", entity_path="packets/{id}",
                         collection_path="packets", organization_column="organization_id",
                         exclude_columns=["internal_note"])


def packet_event(status: str, old_status: str | None, mask: list[str] | None, operation: str = "updated",
                 org: str = "acme") -> bytes:
    old = None if old_status is None else {"key": "packets/1", "properties": {"id": 1, "status": old_status}}
    return orjson.dumps({
        "eventTimestamp": "2026-11-22T12:00:00.000000Z", "operationType": operation, "entityPath": "packets/1",
        "entityId": "1", "entityKey": "flows/packets", "collectionPath": "packets", "organizationId": org,
        "data": {"value": {"key": "packets/1", "properties": {"id": 1, "status": status}}, "oldValue": old,
                 "updateMask": mask}, "eventId": "evt_0000000000000001_000000",
        "transaction": {"id": 1, "commitLsn": "0/1", "index": 0}})


def integration(number: int, *events: Any, org: str = "acme") -> Integration:
    return Integration(number, org, f"i{number}", f"http://127.0.0.1:9/{number}", parse_items(events), ["whsec_x"])


# Routing


def test_the_event_is_parsed_once_with_what_conditions_read() -> None:
    event = parse_event(packet_event("approved", "review", ["status"]))
    assert event.change.new == {"id": 1, "status": "approved"} and event.change.old == {"id": 1, "status": "review"}
    assert event.change.mask == ["status"]
    created = parse_event(packet_event("approved", None, None, operation="created"))
    assert created.change.old is None and created.change.mask is None


def test_routing_keeps_the_recipients_and_the_filtered_apart() -> None:
    candidates = [integration(1, APPROVED), integration(2, "flows/packets:*"), integration(3, "flows/comments:*"),
                  integration(4, APPROVED, "flows/packets:updated"), integration(5, APPROVED, org="globex")]
    approved = route(candidates, parse_event(packet_event("approved", "review", ["status"])))
    edited = route(candidates, parse_event(packet_event("approved", "approved", ["title"])))
    assert [i.id for i in approved.recipients] == [1, 2, 4] and approved.filtered == []
    assert [i.id for i in edited.recipients] == [2, 4]  # a plain subscription of the integration still matches
    assert [i.id for i in edited.filtered] == [1]  # subscribed to the key and operation, the condition did not hold


def test_routing_keeps_the_environment_rule() -> None:
    event = parse_event(packet_event("approved", "review", ["status"]), [("walhook-environment", b"production")])
    production = Integration(1, "acme", "p", "http://127.0.0.1:9/p", parse_items([APPROVED]), [],
                             environment="production")
    staging = Integration(2, "acme", "s", "http://127.0.0.1:9/s", parse_items([APPROVED]), [], environment="staging")
    routed = route([production, staging, integration(3, APPROVED)], event)
    assert [i.id for i in routed.recipients] == [1, 3] and routed.filtered == []


def test_a_subscription_remembers_a_bounded_number_of_entity_keys() -> None:
    subscription = parse_item("flows/*:*")
    assert all(subscription.covers(f"flows/k{n}", "created") for n in range(1500))
    assert not subscription.covers("other/k", "created") and not subscription.covers("other/k", "created")
    assert 0 < len(subscription.keys) <= 1024


def test_without_replica_identity_full_a_to_condition_matches_nothing() -> None:
    """No old row and no updateMask: "changed to approved" is not known, never guessed."""
    hook = integration(1, APPROVED)
    assert not receives(hook, parse_event(packet_event("approved", None, None)))
    assert receives(hook, parse_event(packet_event("approved", None, ["status"])))


def test_a_body_too_deep_to_read_routes_by_its_headers_but_conditions_see_nothing() -> None:
    deep = b'{"data": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    headers = [("walhook-event-id", b"evt_1"), ("walhook-organization-id", b"acme"),
               ("walhook-entity-key", b"flows/packets"), ("walhook-operation-type", b"updated"),
               ("walhook-entity-path", b"packets/1")]
    event = parse_event(deep, headers)
    assert event.change == NO_CHANGE
    assert route([integration(1, APPROVED), integration(2, "flows/packets:*")], event).filtered[0].id == 1


def test_a_subscription_with_conditions_is_compiled_once_and_shown_as_given() -> None:
    first, again = parse_item(APPROVED), parse_item({"when": dict(APPROVED["when"]), "subscription": APPROVED[
        "subscription"]})
    assert first is again  # the bounded cache: one compiled condition per distinct subscription
    assert first.describe() == APPROVED and parse_item("flows/packets:*").describe() == "flows/packets:*"
    shown = integration(1, APPROVED, "flows/comments:*").describe()["events"]
    assert shown == [APPROVED, "flows/comments:*"]


@pytest.mark.parametrize(("item", "message"), [
    ({"subscription": "flows/packets:updated"}, 'events[0]: a subscription is "ENTITY_KEY:OPS" or'),
    ({"subscription": "flows/packets:exploded", "when": {"changed": ["status"]}}, "unknown operation"),
    ({"subscription": "flows/packets:updated", "when": {"property": "status", "to": None}},
     "events[0].when.to: null is not a value"),
    (["flows/packets:*"], "events[0]: a subscription is"),
])
def test_a_malformed_subscription_is_refused_naming_where(item: Any, message: str) -> None:
    with pytest.raises(SubscriptionError) as caught:
        parse_items([item])
    assert message in str(caught.value)


def test_a_sample_as_if_status_changed_to_approved() -> None:
    update = example_event(PACKETS, "updated", "acme", now_us=1_714_564_800_000_000)
    moved = as_if(update, new={"status": "approved"}, old={"status": "review"})
    hook = integration(1, APPROVED)
    assert moved["data"]["updateMask"] == ["status"]
    assert receives(hook, parse_event(orjson.dumps(moved)))
    assert not receives(hook, parse_event(orjson.dumps(update)))  # the plain example changes nothing of it
    same = as_if(update, new={"status": "approved"}, old={"status": "approved"})
    assert "status" not in same["data"]["updateMask"] and not receives(hook, parse_event(orjson.dumps(same)))
    created = as_if(example_event(PACKETS, "created", "acme"), new={"status": "approved"}, old={"status": "x"})
    assert created["data"]["oldValue"] is None and created["data"]["value"]["properties"]["status"] == "approved"


# Checked against the entity's columns (pure)


COLUMNS = [Column("id", "int4", "N", True), Column("organization_id", "text", "S", True),
           Column("status", "packet_status", "E", True, ("review", "approved", "dismissed")),
           Column("assignee", "text", "S"), Column("points", "int4", "N"), Column("urgent", "bool", "B"),
           Column("tags", "_text", "A"), Column("meta", "jsonb", "U"), Column("internal_note", "text", "S")]


def check(when: dict[str, Any], columns: list[Column] | None = COLUMNS, entity: EntitySettings = PACKETS) -> None:
    check_conditions(parse_items([{"subscription": "flows/*:updated", "when": when}]), [shape_of(entity, columns)])


@pytest.mark.parametrize(("when", "message"), [
    ({"property": "stauts", "to": "approved"}, "events[0].when: unknown property 'stauts' of flows/packets; known: "
                                               "assignee, id, meta, organization_id, points, status, tags, urgent"),
    ({"changed": ["status", "titel"]}, "unknown property 'titel'"),
    ({"property": "internal_note", "is_null": False}, "property 'internal_note' of flows/packets is excluded"),
    ({"property": "status", "to": "aproved"}, "'aproved' is not a value of property 'status' of flows/packets "
                                             "(packet_status); its values: approved, dismissed, review"),
    ({"property": "points", "equals": "3"}, "property 'points' of flows/packets (int4) is a number: it never equals "
                                            "the string '3'"),
    ({"property": "urgent", "in": [True, 1]}, "(bool) is a boolean: it never equals the number 1"),
    ({"property": "tags", "equals": "x"}, "(_text) is an array: it never equals a string"),
    ({"property": "status", "is_null": True}, "property 'status' of flows/packets is NOT NULL: is_null true never"),
    ({"any_of": [{"changed": ["status"]}, {"property": "assignee", "not_equals": 5, "row": "old"}]},
     "events[0].when.any_of[1]: property 'assignee' of flows/packets (text) is a string"),
])
def test_a_condition_that_cannot_hold_is_refused_naming_the_property(when: dict[str, Any], message: str) -> None:
    with pytest.raises(ConditionError) as caught:
        check(when)
    assert message in str(caught.value)


def test_conditions_that_can_hold_pass() -> None:
    check({"all_of": [{"property": "status", "from": "review", "to": "approved"}, {"changed": ["assignee"]},
                      {"property": "points", "in": [1, 2.5]}, {"property": "urgent", "equals": False},
                      {"property": "meta", "equals": "anything"}, {"property": "assignee", "is_null": True}]})


def test_without_the_table_only_the_configuration_is_checked() -> None:
    check({"property": "whatever", "equals": 5}, columns=None)  # unknown columns cannot be refused
    with pytest.raises(ConditionError, match="is excluded"):
        check({"property": "internal_note", "equals": "x"}, columns=None)


def test_property_names_are_checked_in_the_events_style() -> None:
    camel = PACKETS.model_copy(update={"property_names": "camel_case"})
    check({"changed": ["organizationId"]}, entity=camel)
    with pytest.raises(ConditionError, match="unknown property 'organization_id'"):
        check({"changed": ["organization_id"]}, entity=camel)


# The table's columns, read from a real Postgres


def test_the_columns_are_read_from_the_source_with_domains_enums_and_arrays(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TYPE packet_status AS ENUM ('review', 'approved', 'dismissed')")
        conn.execute("CREATE DOMAIN points AS int4 CHECK (VALUE >= 0)")
        conn.execute('CREATE TABLE packets (id serial PRIMARY KEY, organization_id text NOT NULL, '
                     'status packet_status NOT NULL DEFAULT \'review\', score points, tags text[], meta jsonb, '
                     'internal_note text, "Mixed" numeric)')
    import asyncio

    (shape,) = asyncio.run(entity_shapes([PACKETS], database))
    assert shape.complete and "internal_note" not in shape.properties and shape.excluded == {"internal_note"}
    kinds = {name: (found.kind, found.not_null) for name, found in shape.properties.items()}
    assert kinds == {"id": ("number", True), "organization_id": ("string", True), "status": ("string", True),
                     "score": ("number", False), "tags": ("array", False), "meta": ("json", False),
                     "Mixed": ("string", False)}
    assert shape.properties["status"].labels == {"review", "approved", "dismissed"}
    (unreachable,) = asyncio.run(entity_shapes([PACKETS], "postgresql://127.0.0.1:1/none"))
    assert not unreachable.complete  # the configuration only, and a warning


# Through the API, and counted by the store


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE packets (id serial PRIMARY KEY, organization_id text NOT NULL, status text, "
                     "points int, internal_note text)")
    settings = Settings(store={"dsn": database, "plaintext_secrets": True}, source={"dsn": database},
                        api={"admin_token": "a" * 30},
                        publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[PACKETS.model_dump()])
    with TestClient(create_app(settings)) as test_client:
        assert test_client.post("/v1/organizations", json={"id": "acme"},
                                headers={"authorization": "Bearer " + "a" * 30}).status_code == 201
        key = test_client.post("/v1/organizations/acme/keys", json={"name": "k"},
                               headers={"authorization": "Bearer " + "a" * 30}).json()["key"]
        test_client.headers["authorization"] = f"Bearer {key}"
        yield test_client


def test_the_api_takes_conditions_shows_them_and_refuses_impossible_ones(client: TestClient) -> None:
    created = client.post("/v1/integrations", json={"url": "http://127.0.0.1:9/hook",
                                                    "events": [APPROVED, "flows/packets:deleted"]})
    assert created.status_code == 201, created.text
    assert created.json()["events"] == [APPROVED, "flows/packets:deleted"]
    path = f"/v1/integrations/{created.json()['id']}"
    unknown = client.patch(path, json={"events": [{"subscription": "flows/packets:updated",
                                                   "when": {"property": "stauts", "to": "approved"}}]})
    assert unknown.status_code == 422 and "unknown property 'stauts' of flows/packets" in unknown.json()["detail"]
    typed = client.patch(path, json={"events": [{"subscription": "flows/packets:*",
                                                 "when": {"property": "points", "equals": "many"}}]})
    assert typed.status_code == 422 and "'points' of flows/packets (int4) is a number" in typed.json()["detail"]
    malformed = client.post("/v1/integrations", json={"url": "http://127.0.0.1:9/hook", "events": [
        {"subscription": "flows/packets:updated", "when": {"property": "status", "became": "approved"}}]})
    assert malformed.status_code == 422 and "events[0].when: unknown key 'became'" in malformed.text
    assert client.get(path).json()["events"] == [APPROVED, "flows/packets:deleted"]  # the refused changes left it


def test_a_sample_says_whether_the_integration_would_have_received_it(client: TestClient) -> None:
    hook = client.post("/v1/integrations", json={"url": "http://127.0.0.1:9/hook", "events": [APPROVED]}).json()
    path = f"/v1/integrations/{hook['id']}/sample"
    approved = client.post(path, json={"entity_key": "flows/packets", "operation": "updated",
                                       "new": {"status": "approved"}, "old": {"status": "review"}}).json()
    plain = client.post(path, json={"entity_key": "flows/packets", "operation": "updated"}).json()
    assert approved["subscribed"] is True and approved["payload"]["data"]["updateMask"] == ["status"]
    assert plain["subscribed"] is False


async def test_filtered_events_are_counted_per_integration_with_the_deliveries(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        first = await store.add_integration("acme", "http://127.0.0.1:9/a", [APPROVED])
        second = await store.add_integration("acme", "http://127.0.0.1:9/b", ["flows/packets:*"])
        hook = await store.integration(second)
        delivery = delivery_of(hook, parse_event(packet_event("x", "y", ["status"])), b"{}", 0, 0)
        await store.create_deliveries([delivery], timedelta(seconds=5), {first: 3})
        await store.create_deliveries([], timedelta(seconds=5), {first: 2, second: 1})
        await store.create_deliveries([], timedelta(seconds=5), {999_999: 1})  # a deleted integration: no error
        assert await store.filtered_counts() == {first: 5, second: 1}
        assert await store.filtered_counts("other") == {}
        assert [d.integration_id for d in await store.deliveries()] == [second]


def test_the_cli_takes_conditions_checks_them_and_lists_the_filtered(database: str, tmp_path: Path) -> None:
    from tests.test_cli import walhook

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE packets (id serial PRIMARY KEY, organization_id text NOT NULL, status text)")
    config = tmp_path / "walhook.toml"
    config.write_text(f'[source]\ndsn = "{database}"\n[kafka]\nbootstrap_servers = "127.0.0.1:9"\n'
                      f'[store]\ndsn = "{database}"\nplaintext_secrets = true\n'
                      '[publisher]\nallowed_networks = ["127.0.0.1/32"]\n'
                      '[[entities]]\ntable = "packets"\nentity_key = "flows/packets"\nentity_path = "packets/{id}"\n'
                      'collection_path = "packets"\norganization_column = "organization_id"\n')
    typo = walhook(config, "integrations", "add", "--org", "acme", "--url", "http://127.0.0.1:9/hook", "--events",
                   orjson.dumps({**APPROVED, "when": {"property": "stat", "to": "approved"}}).decode())
    assert typo.returncode == 1
    assert "walhook: error: events[0].when: unknown property 'stat' of flows/packets" in typo.stderr
    created = walhook(config, "integrations", "add", "--org", "acme", "--url", "http://127.0.0.1:9/hook",
                      "--events", orjson.dumps(APPROVED).decode(), "--json")
    assert created.returncode == 0, created.stderr
    integration_id = str(orjson.loads(created.stdout)["id"])
    changed = walhook(config, "integrations", "set-events", integration_id, "--events", "flows/packets:deleted",
                      "--events",
                      orjson.dumps(APPROVED).decode())
    assert changed.returncode == 0, changed.stderr
    (listed,) = orjson.loads(walhook(config, "integrations", "list", "--json").stdout)
    assert listed["events"] == ["flows/packets:deleted", APPROVED] and listed["filtered"] == 0


@pytest.mark.parametrize("per_integration", [False, True])
def test_metrics_count_filtered_events(database: str, per_integration: bool) -> None:
    settings = Settings(store={"dsn": database, "plaintext_secrets": True}, api={"admin_token": "a" * 30,
                                                      "metrics_per_integration": per_integration})
    with TestClient(create_app(settings)) as test_client:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("INSERT INTO walhook.organizations (id) VALUES ('acme')")
            ids = [conn.execute("INSERT INTO walhook.integrations (organization_id, name, url, events) VALUES "
                                "('acme', 'x', 'http://127.0.0.1:9/x', '[]') RETURNING id").fetchone()[0]
                   for _ in range(2)]
            conn.execute("INSERT INTO walhook.filtered_events (integration_id, events) VALUES (%s, 5), (%s, 2)", ids)
        metrics = test_client.get("/metrics", headers={"authorization": "Bearer " + "a" * 30}).text
    assert "walhook_events_filtered_total 7.0\n" in metrics
    labelled = [f'walhook_integration_events_filtered_total{{integration="{ids[0]}"}} 5',
                f'walhook_integration_events_filtered_total{{integration="{ids[1]}"}} 2']
    assert all((line in metrics) is per_integration for line in labelled)


def test_the_portal_form_keeps_a_subscription_with_conditions_when_saved_again() -> None:
    from starlette.datastructures import FormData

    from control.api.schemas import items_of
    from control.portal.forms import form_of, read_form

    saved = integration(1, APPROVED, "flows/packets:created")
    form = form_of(saved, ["flows/packets"])
    assert form.ticked == {"flows/packets:created"} and orjson.loads(form.values["other"]) == APPROVED
    data = FormData([*((k, v) for k, v in form.values.items()), *(("events", t) for t in sorted(form.ticked))])
    _, body = read_form(data)
    assert body is not None and items_of(body.events) == ["flows/packets:created", APPROVED]


async def test_an_organizations_conditions_have_a_cost_budget_through_every_front_end(database: str) -> None:
    """Reported: 10 integrations with 100 maximal conditions cost 57 ms per event on the event loop, and
    another organization's row arrived after 10 s. What routing one event may cost is bounded per organization."""
    from control import actions
    from control.actor import OPERATOR
    from models.errors import Conflict
    from models.settings import ApiSettings

    api = ApiSettings(max_condition_cost_per_organization=50)
    wide = {"subscription": "docs:*", "when": {"any_of": [{"property": "n", "equals": n} for n in range(20)]}}
    async with Store(database) as store:
        await store.add_organization("acme")
        await store.add_organization("globex")
        first = await actions.create_integration(store, api, OPERATOR, "acme", "http://127.0.0.1:9/a", [wide])  # 22
        second = await actions.create_integration(store, api, OPERATOR, "acme", "http://127.0.0.1:9/b", [wide])  # 44
        with pytest.raises(Conflict, match=r"would cost 66 tests per event, more than the 50 allowed \(\[api\] "
                                           r"max_condition_cost_per_organization\)"):
            await actions.create_integration(store, api, OPERATOR, "acme", "http://127.0.0.1:9/c", [wide])
        with pytest.raises(Conflict, match="max_condition_cost_per_organization"):
            await actions.update_integration(store, api, OPERATOR, second, {"events": [wide, wide]})
        await actions.update_integration(store, api, OPERATOR, first, {"events": ["docs:*"]})  # cheaper: fine
        await actions.create_integration(store, api, OPERATOR, "globex", "http://127.0.0.1:9/d", [wide])  # own budget
        assert len(await store.integrations_of("acme")) == 2
