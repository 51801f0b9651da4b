"""Real schemas: while capture runs, the application's writes never fail, and every change arrives.

The fixture holds the table shapes real applications have: stored and virtual generated columns,
an identity USING INDEX set by the database's owner, quoted camelCase names in a schema of their
own, a partitioned table with a default partition, and enums, domains, arrays and jsonb.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from starlette.testclient import TestClient

from cdc.errors import KafkaWriteError, SourceError
from cdc.identity import TableShape, choose_identity
from cdc.lsn import parse_lsn
from cdc.pipeline import run_capture
from cdc.source import prepare_source
from control.api.app import create_app
from control.status import slot_status
from models.settings import EntitySettings, KafkaSettings, Settings, SourceSettings
from publisher.store import Store
from tests.conftest import Servers
from tests.portal_support import ADMIN, admin_headers, open_link, organization, portal_link
from tests.support import capture_and_publisher, until_streaming, wait_for, write_config
from tests.test_capture import capturing, read_topic
from tests.test_cdc_features import setup, source_and_kafka
from walhook.cli.status import render, slot_lines
from walhook.config import load_settings
from walhook.receiver import VerifyingReceiver
from walhook.stack import free_port

SCHEMA = [
    "CREATE TABLE order_orderline (id int PRIMARY KEY, org text, quantity int, unit_price numeric, "
    "total numeric GENERATED ALWAYS AS (quantity * unit_price) STORED)",
    # Without a FULL identity a delete carries only the key: the organization must be in it, or fixed.
    "CREATE TABLE gauges (id int PRIMARY KEY, reading int, doubled int GENERATED ALWAYS AS (reading * 2) VIRTUAL)",
    "CREATE TABLE codes (code text NOT NULL, org text NOT NULL, label text)",
    "CREATE UNIQUE INDEX codes_code ON codes (code, org)",
    "ALTER TABLE codes REPLICA IDENTITY USING INDEX codes_code",
    "CREATE SCHEMA billing",
    'CREATE TABLE billing."Invoice" ("invoiceId" int PRIMARY KEY, "tenantId" text, "amountDue" numeric, '
    '"createdAt" timestamptz DEFAULT now())',
    "CREATE TABLE payment (id int, org text, paid_on date, amount numeric, PRIMARY KEY (id, paid_on)) "
    "PARTITION BY RANGE (paid_on)",
    "CREATE TABLE payment_2026 PARTITION OF payment FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
    "CREATE TABLE payment_other PARTITION OF payment DEFAULT",
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
    "CREATE DOMAIN positive AS int CHECK (VALUE > 0)",
    "CREATE TABLE moods (id int PRIMARY KEY, org text, mood mood, score positive, tags text[], doc jsonb)",
    "CREATE TABLE audit_notes (org text, author text, note text)",  # no key at all: FULL names its rows
]

ENTITIES = [
    EntitySettings(table="order_orderline", entity_key="orderlines", entity_path="orderlines/{id}",
                   collection_path="orderlines", organization_column="org"),
    EntitySettings(table="gauges", entity_key="gauges", entity_path="gauges/{id}", collection_path="gauges",
                   organization="acme"),
    EntitySettings(table="codes", entity_key="codes", entity_path="codes/{code}", collection_path="codes",
                   organization_column="org"),
    EntitySettings(table="billing.Invoice", entity_key="invoices", entity_path="invoices/{invoiceId}",
                   collection_path="invoices", organization_column="tenantId", create_time_column="createdAt"),
    EntitySettings(table="payment", entity_key="payments", entity_path="payments/{id}", collection_path="payments",
                   organization_column="org"),
    EntitySettings(table="moods", entity_key="moods", entity_path="moods/{id}", collection_path="moods",
                   organization_column="org"),
    EntitySettings(table="audit_notes", entity_key="notes", entity_path="notes/{author}", collection_path="notes",
                   organization_column="org"),
]

# The application's writes: per table an INSERT, an UPDATE and a DELETE, then a TRUNCATE of all.
WRITES = [
    ("orderlines", "INSERT INTO order_orderline (id, org, quantity, unit_price) VALUES (1, 'acme', 2, 2.5)",
     "UPDATE order_orderline SET quantity = 3 WHERE id = 1", "DELETE FROM order_orderline WHERE id = 1"),
    ("gauges", "INSERT INTO gauges (id, reading) VALUES (1, 4)",
     "UPDATE gauges SET reading = 5 WHERE id = 1", "DELETE FROM gauges WHERE id = 1"),
    ("codes", "INSERT INTO codes (code, org, label) VALUES ('A1', 'acme', 'first')",
     "UPDATE codes SET label = 'second' WHERE code = 'A1'", "DELETE FROM codes WHERE code = 'A1'"),
    ("invoices", """INSERT INTO billing."Invoice" ("invoiceId", "tenantId", "amountDue") VALUES (1, 'acme', 10)""",
     """UPDATE billing."Invoice" SET "amountDue" = 12 WHERE "invoiceId" = 1""",
     """DELETE FROM billing."Invoice" WHERE "invoiceId" = 1"""),
    ("payments", "INSERT INTO payment (id, org, paid_on, amount) VALUES (1, 'acme', '2026-03-01', 5)",
     "UPDATE payment SET amount = 6 WHERE id = 1", "DELETE FROM payment WHERE id = 1"),
    ("moods", "INSERT INTO moods VALUES (1, 'acme', 'ok', 3, '{a,b}', '{\"k\": [1, {\"x\": null}]}')",
     "UPDATE moods SET mood = 'happy', tags = '{c}' WHERE id = 1", "DELETE FROM moods WHERE id = 1"),
    ("notes", "INSERT INTO audit_notes VALUES ('acme', 'ann', 'hello')",
     "UPDATE audit_notes SET note = 'bye' WHERE author = 'ann'", "DELETE FROM audit_notes WHERE author = 'ann'"),
]


def identities(database: str) -> dict[str, str]:
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT oid::regclass::text, relreplident FROM pg_class WHERE relname IN "
                            "('order_orderline', 'gauges', 'codes', 'Invoice', 'payment', 'payment_2026', "
                            "'payment_other', 'payment_2027', 'moods', 'audit_notes')").fetchall()
    return dict(rows)


def entities_toml(entities: list[EntitySettings]) -> str:
    """The ``[[entities]]`` blocks of a config file for ``entities``."""
    keys = ("table", "entity_key", "entity_path", "collection_path", "organization_column", "organization",
            "create_time_column")
    return "\n".join("[[entities]]\n" + "".join(f'{key} = "{getattr(entity, key)}"\n' for key in keys
                                                  if getattr(entity, key) is not None) for entity in entities)


async def test_the_applications_writes_never_fail_and_every_change_arrives(
        database: str, servers: Servers, topic: str, workdir: Path) -> None:
    """Every fixture table, while walhook cdc and walhook publisher run: the app's INSERT, UPDATE, DELETE and
    TRUNCATE never fail, and every change arrives as a webhook the standardwebhooks library verifies."""
    setup(database, *SCHEMA)
    config = write_config(workdir / "walhook.toml", database, servers.bootstrap_servers, topic,
                          entities_toml(ENTITIES))
    errors: list[str] = []
    async with VerifyingReceiver() as receiver, Store(database) as store:
        receiver.secrets["acme"] = await store.add_organization("acme")
        await store.add_integration("acme", receiver.url_for("acme"), ["*:*"])
        async with capture_and_publisher(config, workdir, database, servers.bootstrap_servers, topic):
            with psycopg.connect(database, autocommit=True) as app:
                for _, *statements in WRITES:
                    for statement in statements:
                        try:
                            app.execute(statement)
                        except psycopg.Error as exc:
                            errors.append(f"{statement}: {exc}")
                try:
                    app.execute('TRUNCATE order_orderline, gauges, codes, billing."Invoice", payment, moods, '
                                'audit_notes')
                except psycopg.Error as exc:
                    errors.append(f"TRUNCATE: {exc}")
            await wait_for(lambda: len({hook.webhook_id for hook in receiver.received}) >= 3 * len(WRITES),
                           timeout=60, what="a verified webhook for every change")
    assert errors == [] and receiver.rejected == []
    by = {(hook.event["entityKey"], hook.event["operationType"]): hook.event for hook in receiver.received}
    assert set(by) == {(key, op) for key, *_ in WRITES for op in ("created", "updated", "deleted")}
    assert by["orderlines", "updated"]["data"]["value"]["properties"]["total"] == "7.5"  # stored: published
    assert by["orderlines", "updated"]["data"]["updateMask"] == ["quantity", "total"]
    assert by["gauges", "updated"]["data"]["oldValue"] is None  # a virtual column rules out FULL: no old row
    assert by["payments", "updated"]["entityPath"] == "payments/1"  # through the partition root
    assert by["invoices", "created"]["organizationId"] == "acme"
    assert by["moods", "updated"]["data"]["value"]["properties"]["tags"] == ["c"]
    assert by["notes", "deleted"]["data"]["oldValue"]["properties"]["note"] == "bye"  # FULL: the whole old row
    found = identities(database)
    assert found["codes"] == "i"  # the owner's USING INDEX is kept
    assert found["order_orderline"] == "f" and found["payment_2026"] == "f" and found["gauges"] == "d"
    assert found["audit_notes"] == "f"


async def test_an_entity_may_ask_for_full_over_using_index(database: str, servers: Servers, topic: str) -> None:
    setup(database, *SCHEMA[2:5])
    source, _ = source_and_kafka(database, servers, topic)
    codes = ENTITIES[2].model_copy(update={"replica_identity_full": True})
    choices = await prepare_source(source, [codes])
    assert [c.summary for c in choices] == ["USING INDEX -> FULL (for oldValue and updateMask)"]
    assert identities(database)["codes"] == "f"


async def test_full_with_a_virtual_column_is_refused_and_nothing_changes(
        database: str, servers: Servers, topic: str) -> None:
    setup(database, SCHEMA[0], SCHEMA[1], "ALTER TABLE gauges REPLICA IDENTITY FULL")
    source, _ = source_and_kafka(database, servers, topic)
    with pytest.raises(SourceError, match=r"virtual generated column.*doubled"):
        await prepare_source(source, [ENTITIES[0], ENTITIES[1]])
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)
    assert identities(database)["order_orderline"] == "d"  # the transaction changed nothing
    setup(database, "INSERT INTO gauges (id, reading) VALUES (1, 1)", "UPDATE gauges SET reading = 2")


async def test_a_publication_left_without_generated_columns_is_set_right(
        database: str, servers: Servers, topic: str) -> None:
    """An older walhook's publication (no generated columns) and FULL made the app's UPDATE fail."""
    setup(database, SCHEMA[0], "ALTER TABLE order_orderline REPLICA IDENTITY FULL",
          "CREATE PUBLICATION walhook FOR TABLE order_orderline")
    source = SourceSettings(dsn=database)
    await prepare_source(source, [ENTITIES[0]])
    setup(database, "INSERT INTO order_orderline (id, org, quantity, unit_price) VALUES (1, 'acme', 1, 1)",
          "UPDATE order_orderline SET quantity = 2", "DELETE FROM order_orderline")


@pytest.mark.parametrize(("shape", "entity", "source", "expected"), [
    (TableShape("t", "d", True), None, True, (True, True)),
    (TableShape("t", "d", True), False, True, (False, False)),
    (TableShape("t", "d", True), None, False, (False, False)),
    (TableShape("t", "i", False), None, True, (False, False)),
    (TableShape("t", "i", False), True, True, (True, True)),
    (TableShape("t", "f", True), False, False, (False, True)),
    (TableShape("t", "d", True, ("v",)), None, True, (False, False)),
    (TableShape("t", "n", False), True, False, (True, True)),
    (TableShape("t", "d", False), None, True, (True, True)),
])
def test_the_identity_rules(shape: TableShape, entity: bool | None, source: bool, expected: tuple[bool, bool]) -> None:
    choice = choose_identity(shape, entity, source)
    assert (choice.set_full, choice.old_values) == expected


@pytest.mark.parametrize("shape", [TableShape("t", "n", False), TableShape("t", "d", False, ("v",)),
                                   TableShape("t", "f", True, ("v",)), TableShape("t", "n", False, ("v",))])
def test_shapes_no_identity_can_serve_are_refused(shape: TableShape) -> None:
    with pytest.raises(SourceError, match="t"):
        choose_identity(shape, None, True)


def test_init_lists_what_capture_would_do_to_each_identity(database: str) -> None:
    setup(database, *SCHEMA)
    listed = subprocess.run([sys.executable, "-m", "walhook", "init", "--dsn", database, "--list"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    lines = {line.split()[0]: line for line in listed.splitlines()}
    assert "replica identity DEFAULT -> FULL" in lines["public.order_orderline"]
    assert "USING INDEX kept (as set by the database's owner)" in lines["public.codes"]
    assert "virtual generated column(s) doubled rule out FULL" in lines["public.gauges"]


def test_init_reads_orm_names_and_leaves_secrets_out(database: str, tmp_path: Path) -> None:
    setup(database, "CREATE SCHEMA billing",
          'CREATE TABLE billing."Invoice" ("invoiceId" int PRIMARY KEY, "tenantId" text, "createdAt" timestamptz, '
          '"updatedAt" timestamptz)',
          "CREATE TABLE auth_user (id serial PRIMARY KEY, password varchar(128), username text, "
          "date_joined timestamptz, last_login timestamptz)",
          "CREATE TABLE actor (actor_id serial PRIMARY KEY, first_name text, last_update timestamptz)",
          'CREATE TABLE "apiClients" (id int PRIMARY KEY, "organizationId" text, "apiKey" text, "footprint" text)')
    out = tmp_path / "walhook.toml"
    done = subprocess.run([sys.executable, "-m", "walhook", "init", "--dsn", database, "--all", "--output", str(out),
                           "--admin-token", "t" * 24], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    entities = {e.table: e for e in load_settings(out).entities}
    invoice, user, actor, clients = (entities[t] for t in ("billing.Invoice", "public.auth_user", "public.actor",
                                                           "public.apiClients"))
    assert (invoice.organization_column, invoice.create_time_column, invoice.update_time_column) == (
        "tenantId", "createdAt", "updatedAt")
    assert user.exclude_columns == ["password"] and user.create_time_column == "date_joined"
    assert actor.update_time_column == "last_update"
    assert clients.organization_column == "organizationId" and clients.exclude_columns == ["apiKey"]
    assert "no organization column found in public.actor, public.auth_user" in done.stderr
    assert "public.auth_user: left out of events, their names say they hold secrets: password" in done.stderr
    text = out.read_text()
    assert "\n[portal]\n" in text and "\n[backfill]\n" in text


async def test_a_first_start_that_cannot_reach_kafka_leaves_no_slot(database: str, servers: Servers,
                                                                    topic: str) -> None:
    setup(database, SCHEMA[0])
    source = SourceSettings(dsn=database, status_interval=0.1)
    unreachable = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", topic=topic)
    with pytest.raises(KafkaWriteError, match="cannot create topic"):
        await asyncio.wait_for(run_capture(source, unreachable, [ENTITIES[0]], asyncio.Event()), 60)
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
                            ).fetchall() == []
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [f"stale_{topic[-8:]}"])
    status = await slot_status(source)  # walhook's own slot does not exist; the stale one is named
    assert f"stale_{topic[-8:]}" in {s["name"] for s in status["inactive_slots"]}
    assert any(f"inactive slot stale_{topic[-8:]} holds" in line for line in slot_lines(status))
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", [f"stale_{topic[-8:]}"])


async def test_a_table_without_an_organization_column_gets_its_fixed_organization(
        database: str, servers: Servers, topic: str, row_path: str) -> None:
    """15 of 18 tables of a real app had no organization column: their events went to nobody."""
    setup(database, "CREATE TABLE settings_flag (id int PRIMARY KEY, name text, enabled boolean)")
    flags = EntitySettings(table="settings_flag", entity_key="flags", entity_path="flags/{id}",
                           collection_path="flags", organization="acme")
    source, kafka = source_and_kafka(database, servers, topic, row_path)
    async with capturing(source, kafka, [flags]):
        await until_streaming(database)
        setup(database, "INSERT INTO settings_flag VALUES (1, 'beta', true)",
              "UPDATE settings_flag SET enabled = false", "DELETE FROM settings_flag")
        events = await read_topic(servers.bootstrap_servers, topic, 3)
    assert [(e["operationType"], e["organizationId"]) for e in events] == [
        ("created", "acme"), ("updated", "acme"), ("deleted", "acme")]


def test_a_default_organization_goes_to_entities_with_neither_setting() -> None:
    settings = Settings(source={"dsn": "postgresql://x/y", "default_organization": "acme"}, entities=[
        {"table": "a", "entity_key": "a", "entity_path": "a/{id}", "collection_path": "a"},
        {"table": "b", "entity_key": "b", "entity_path": "b/{id}", "collection_path": "b",
         "organization_column": "org"},
        {"table": "c", "entity_key": "c", "entity_path": "c/{id}", "collection_path": "c", "organization": "globex"}])
    assert [(e.organization, e.organization_column) for e in settings.entities] == [
        ("acme", None), (None, "org"), ("globex", None)]
    with pytest.raises(ValueError, match=r"organization_column \(each row's own\) or organization .*not both"):
        EntitySettings(table="d", entity_key="d", entity_path="d/{id}", collection_path="d", organization="x",
                       organization_column="org")


def test_the_catalogue_and_status_name_entities_that_reach_no_organization(database: str) -> None:
    entities = [
        {"table": "public.flags", "entity_key": "flags", "entity_path": "flags/{id}", "collection_path": "flags"},
        {"table": "public.docs", "entity_key": "docs", "entity_path": "docs/{id}", "collection_path": "docs",
         "organization_column": "org"},
        {"table": "public.theirs", "entity_key": "theirs", "entity_path": "t/{id}", "collection_path": "t",
         "organization": "globex"}]
    settings = Settings(store={"dsn": database, "plaintext_secrets": True}, api={"admin_token": ADMIN},
                        publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=entities)
    with TestClient(create_app(settings)) as client:
        key = organization(client, "acme")
        listed = {e["entityKey"]: e["reachesNoOrganization"] for e in client.get("/v1/catalogue", headers=key).json()}
        assert listed == {"flags": True, "docs": False, "walhook/operational": False}  # not globex's table
        status = client.get("/v1/status", headers=admin_headers()).json()
        open_link(client, portal_link(client, key))
        page = client.get("/portal/o/acme/catalogue").text
    assert status["entities_without_organization"] == ["flags"]
    assert any(line.startswith("entities whose events reach no organization") and "flags" in line
               for line in render(status))
    assert "no integration receives them" in page and "theirs" not in page


async def test_a_partition_attached_while_capturing_sends_old_rows(database: str, servers: Servers,
                                                                   topic: str) -> None:
    """It had null oldValue and updateMask until capture restarted."""
    setup(database, *SCHEMA[7:10])
    source, kafka = source_and_kafka(database, servers, topic)  # heartbeats every 0.3 s
    async with capturing(source, kafka, [ENTITIES[4]]):
        await until_streaming(database)
        setup(database, "CREATE TABLE payment_2027 (LIKE payment INCLUDING ALL)",
              "ALTER TABLE payment ATTACH PARTITION payment_2027 FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')")
        for _ in range(100):  # the next heartbeats adopt it
            if identities(database).get("payment_2027") == "f":
                break
            await asyncio.sleep(0.1)
        setup(database, "INSERT INTO payment (id, org, paid_on, amount) VALUES (7, 'acme', '2027-02-01', 5)",
              "UPDATE payment SET amount = 6 WHERE id = 7")
        events = await read_topic(servers.bootstrap_servers, topic, 2)
    updated = next(e for e in events if e["operationType"] == "updated")
    assert updated["data"]["oldValue"]["properties"]["amount"] == "5" and updated["data"]["updateMask"] == ["amount"]


async def test_a_row_moved_to_another_partition_is_one_update(database: str, servers: Servers, topic: str,
                                                              row_path: str) -> None:
    """It arrived as deleted + created: pgoutput sends such an UPDATE as a DELETE and an INSERT."""
    setup(database, *SCHEMA[7:10])
    source, kafka = source_and_kafka(database, servers, topic, row_path)
    async with capturing(source, kafka, [ENTITIES[4]]):
        await until_streaming(database)
        setup(database, "INSERT INTO payment (id, org, paid_on, amount) VALUES (1, 'acme', '2026-03-01', 5)",
              "UPDATE payment SET paid_on = '2025-01-01' WHERE id = 1",  # payment_2026 -> payment_other
              "BEGIN; DELETE FROM payment WHERE id = 1; INSERT INTO payment VALUES (2, 'acme', '2026-04-01', 1); "
              "COMMIT")
        events = await read_topic(servers.bootstrap_servers, topic, 4)
    events.sort(key=lambda e: (parse_lsn(e["transaction"]["commitLsn"]), e["transaction"]["index"]))
    # The move is one update; a DELETE and an INSERT of two entities stay what they were.
    assert [(e["operationType"], e["entityPath"]) for e in events] == [
        ("created", "payments/1"), ("updated", "payments/1"), ("deleted", "payments/1"), ("created", "payments/2")]
    moved = events[1]["data"]
    assert moved["oldValue"]["properties"]["paid_on"] == "2026-03-01" and moved["updateMask"] == ["paid_on"]
    assert moved["value"]["properties"]["paid_on"] == "2025-01-01"
