"""Configuration: one TOML file, overridable by ``WALHOOK_*`` environment variables.

Nested keys use ``__`` in the environment: ``WALHOOK_KAFKA__BOOTSTRAP_SERVERS`` overrides
``[kafka] bootstrap_servers``. Unknown keys and wrong types are errors that name the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from models.settings import (
    ApiSettings,
    BackfillSettings,
    EntitySettings,
    KafkaSettings,
    PortalSettings,
    PublisherSettings,
    SourceSettings,
    StoreSettings,
)
from walhook.errors import ConfigError


class Settings(BaseSettings):
    """The whole configuration. Sections left out of the file are absent (``None``)."""

    model_config = SettingsConfigDict(env_prefix="WALHOOK_", env_nested_delimiter="__", extra="forbid")

    source: SourceSettings | None = None
    kafka: KafkaSettings | None = None
    store: StoreSettings | None = None
    publisher: PublisherSettings = Field(default_factory=PublisherSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    portal: PortalSettings = Field(default_factory=PortalSettings)
    backfill: BackfillSettings = Field(default_factory=BackfillSettings)
    entities: list[EntitySettings] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file's values, which arrive as init arguments.
        return env_settings, init_settings

    def require(self, *sections: str) -> None:
        """Fail with a clear message when a command needs a section the file lacks."""
        missing = [name for name in sections if getattr(self, name) is None]
        if missing:
            raise ConfigError("missing section(s): " + ", ".join(f"[{name}]" for name in missing))


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (TOML), apply ``WALHOOK_*`` env vars, validate; ``ConfigError`` names the key."""
    where = str(path) if path else "configuration"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"{where}: file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(where, exc)) from exc


def format_validation_error(where: str, exc: ValidationError) -> str:
    """One line per problem: ``file: kafka.acks: Input should be 'all', '1' or '0'``."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        lines.append(f"{where}: {key}: {message}")
    return "\n".join(lines)
