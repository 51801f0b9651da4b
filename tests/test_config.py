"""Configuration errors name the file and the bad key; the environment overrides the file."""

from pathlib import Path

import pytest

from models.errors import ConfigError
from walhook.config import load_settings

GOOD = '''
[source]
dsn = "postgresql://app@db/app"

[kafka]
bootstrap_servers = "kafka:9092"

[store]
dsn = "postgresql://app@db/app"

[[entities]]
table = "packet_comments"
entity_key = "flows/comments"
entity_path = "pipelinesPackets/{packet_id}/comments/{id}"
collection_path = "pipelinesPackets/{packet_id}/comments"
'''


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "walhook.toml"
    path.write_text(text)
    return path


def test_a_good_file_with_documented_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.source is not None and settings.source.slot == "walhook"
    assert settings.kafka is not None and settings.kafka.acks == "all" and settings.kafka.topic == "walhook.events"
    assert settings.store is not None and settings.store.schema_name == "walhook"
    assert settings.publisher.retry_delays[:3] == [0, 5, 300]
    (entity,) = settings.entities
    assert entity.table == "public.packet_comments"
    assert entity.columns_used() == {"packet_id", "id"}


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"walhook.toml: kafka.bootstrap_server: unknown key"):
        load_settings(write(tmp_path, GOOD.replace("bootstrap_servers", "bootstrap_server")))


def test_wrong_type_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kafka.partitions: "):
        load_settings(write(
            tmp_path, GOOD.replace('bootstrap_servers = "kafka:9092"', 'bootstrap_servers = "k"\npartitions = "x"')))


def test_bad_template_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"entities.0.entity_path: .*not a column name"):
        load_settings(write(tmp_path, GOOD.replace("{packet_id}/comments/{id}", "{packet.id}/comments/{id}")))


def test_bad_slot_name_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"source.slot: .*lowercase"):
        load_settings(write(tmp_path, GOOD.replace('dsn = "postgresql://app@db/app"\n\n[kafka]',
                                                   'dsn = "postgresql://app@db/app"\nslot = "My-Slot"\n\n[kafka]')))


@pytest.mark.parametrize("schema", ['walhook"; DROP TABLE app.users; --', "wal hook", "1walhook", "", "w" * 64,
                                    "public.walhook"])
def test_the_store_schema_must_be_an_identifier(tmp_path: Path, schema: str) -> None:
    # It is interpolated into SQL as a quoted identifier: a quote in it would end the identifier.
    text = GOOD.replace('[store]\ndsn = "postgresql://app@db/app"', f'[store]\ndsn = "postgresql://app@db/app"\n'
                        f"schema = '{schema}'")
    assert f"schema = '{schema}'" in text
    with pytest.raises(ConfigError, match=r"walhook.toml: store.schema: .*identifier"):
        load_settings(write(tmp_path, text))


@pytest.mark.parametrize("schema", ["walhook", "walhook_tenant_2", "_w", "Walhook"])
def test_an_identifier_is_a_good_store_schema(tmp_path: Path, schema: str) -> None:
    text = GOOD.replace('[store]\ndsn = "postgresql://app@db/app"', f'[store]\ndsn = "postgresql://app@db/app"\n'
                        f'schema = "{schema}"')
    settings = load_settings(write(tmp_path, text))
    assert settings.store is not None and settings.store.schema_name == schema


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[source\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml")


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALHOOK_KAFKA__BOOTSTRAP_SERVERS", "other:9092")
    monkeypatch.setenv("WALHOOK_SOURCE__SLOT", "from_env")
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.kafka is not None and settings.kafka.bootstrap_servers == "other:9092"
    assert settings.source is not None and settings.source.slot == "from_env"
    assert settings.source.dsn == "postgresql://app@db/app"


def test_missing_section_is_named(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[kafka]\nbootstrap_servers = "k:1"\n'))
    with pytest.raises(ConfigError, match=r"\[source\]"):
        settings.require("source", "kafka")
