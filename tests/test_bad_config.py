"""Bad configuration beyond ``test_config``: each mistake gets one clear message naming it, at load,
at start or from the CLI; rows whose organization column is null still flow.

Covered elsewhere: unknown keys and wrong types (``test_config``), a missing table
(``test_capture``), invalid subscriptions through the API (``test_api``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from cdc.errors import SourceError
from cdc.pipeline import run_capture
from models.errors import ConfigError
from models.settings import EntitySettings, KafkaSettings, SourceSettings
from tests.conftest import Servers
from tests.test_bad_data import capturing, execute
from tests.test_cli import config_file, walhook
from tests.test_config import GOOD, write
from walhook.config import load_settings


@pytest.mark.parametrize(("change", "message"), [
    (("{packet_id}/comments/{id}", "{packet_id}/comments/{id"),
     r"entities.0.entity_path: .*bad template .*expected '}' before end of string"),
    (("/comments\"\n", "/comments/{}\"\n"), r"entities.0.collection_path: .*{} is not a column name"),
    (('table = "packet_comments"', 'table = "\\"Packet Comments\\""'), r"entities.0.table: .*without quotes"),
    (('table = "packet_comments"', 'table = "packet_comments"\nexclude_columns = "secret"'),
     r"entities.0.exclude_columns: Input should be a valid list"),
    (('table = "packet_comments"', 'table = "packet_comments"\nproperty_names = "snake"'),
     r"entities.0.property_names: Input should be 'as_is' or 'camel_case'"),
    (('bootstrap_servers = "kafka:9092"', 'bootstrap_servers = "kafka:9092"\n[publisher]\ndead_letter_topic = ""'),
     r"publisher.dead_letter_topic: String should have at least 1 character"),
    (("[[entities]]", "[[entity]]"), r"entity: unknown key"),
])
def test_bad_entity_settings_are_named(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    assert change[0] in GOOD
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, GOOD.replace(*change)))


async def test_a_template_naming_a_missing_column_is_refused_at_start(
        database: str, servers: Servers, topic: str) -> None:
    execute(database, "CREATE TABLE items (id int PRIMARY KEY, org text)")
    source = SourceSettings(dsn=database)
    kafka = KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic)
    items = EntitySettings(table="items", entity_key="items", entity_path="items/{item_id}", collection_path="items",
                           organization_column="organisation")
    with pytest.raises(SourceError, match=r"\[\[entities\]\] table public.items: column\(s\) item_id, organisation "
                                          r"named in the mapping do not exist \(table has: id, org\)"):
        await run_capture(source, kafka, [items], asyncio.Event())
    with psycopg.connect(database) as conn:  # refused before anything was set up
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)


async def test_rows_whose_organization_is_null_still_flow(database: str, servers: Servers, topic: str) -> None:
    execute(database, "CREATE TABLE items (id int PRIMARY KEY, org text)")
    items = EntitySettings(table="items", entity_key="items", entity_path="items/{id}", collection_path="items",
                           organization_column="org")
    async with capturing(database, servers, topic, [items]) as capture:
        execute(database, "INSERT INTO items VALUES (1, 'acme'), (2, NULL), (3, 'acme')",
                "UPDATE items SET org = 'globex' WHERE id = 2")
        events = await capture.events(5)
    # Giving the row an organization is a move (from none): globex is told of a new entity.
    assert [(e["entityId"], e["operationType"], e["organizationId"]) for e in events] == [
        ("1", "created", "acme"), ("2", "created", None), ("3", "created", "acme"), ("2", "deleted", None),
        ("2", "created", "globex")]


async def test_the_cli_refuses_a_bad_subscription_before_creating_anything(database: str, tmp_path: Path) -> None:
    config = config_file(tmp_path, database)
    for events, message in [("docs:exploded", "subscription 'docs:exploded': unknown operation(s) exploded; use "
                                              "created, updated, deleted, read or *"),
                            (":created", "subscription ':created': the entity key is empty")]:
        refused = walhook(config, "integrations", "add", "--org", "acme", "--url", "http://127.0.0.1:9/hook",
                          "--events", events)
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines()[-1] == f"walhook: error: {message}"
    assert walhook(config, "orgs", "list", "--json").stdout.strip() == "[]"  # no organization left behind


async def test_the_cli_names_a_malformed_header(database: str, tmp_path: Path) -> None:
    refused = walhook(config_file(tmp_path, database), "integrations", "add", "--org", "acme", "--url",
                      "http://127.0.0.1:9/hook", "--events", "docs:*", "--header", "no-colon")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == "walhook: error: --header 'no-colon': use NAME:VALUE"
