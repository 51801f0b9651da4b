"""Configuration: one TOML file, overridable by ``WALHOOK_*`` environment variables.

Nested keys use ``__`` in the environment: ``WALHOOK_KAFKA__BOOTSTRAP_SERVERS`` overrides
``[kafka] bootstrap_servers``. Unknown keys and wrong types are errors that name the key.
The file is found by ``find_config``: ``--config``, then ``$WALHOOK_CONFIG``, then
``./walhook.toml``; a command that needs a section no file gave names every place it looked.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from models.settings import (
    ApiSettings,
    BackfillSettings,
    EntitySettings,
    KafkaSettings,
    PortalSettings,
    PublisherSettings,
    RetentionSettings,
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
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    entities: list[EntitySettings] = Field(default_factory=list)
    _origin: str = PrivateAttr(default="configuration")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file's values, which arrive as init arguments.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _default_organization(self) -> Settings:
        """Give ``[source] default_organization`` to every entity with neither organization setting: the
        entity is then the one place capture and backfills read a row's organization from."""
        default = self.source.default_organization if self.source else None
        if default is not None:
            self.entities = [entity if entity.reaches_an_organization() else
                             entity.model_copy(update={"organization": default}) for entity in self.entities]
        return self

    def require(self, *sections: str) -> None:
        """Fail with a clear message when a command needs a section the file lacks."""
        missing = [name for name in sections if getattr(self, name) is None]
        if missing:
            raise ConfigError(f"{self._origin}: missing section(s): " + ", ".join(f"[{name}]" for name in missing))


CONFIG_FILE = "walhook.toml"


def find_config(given: str | None, environ: Mapping[str, str] | None = None,
                cwd: Path | None = None) -> tuple[Path | None, str]:
    """The file to read and how it was found: ``--config``, ``$WALHOOK_CONFIG``, ``./walhook.toml``.

    ``(None, where-we-looked)`` when there is none; a file that was named but is missing is an error.
    """
    environ = os.environ if environ is None else environ
    if given:
        return Path(given), given
    if environ.get("WALHOOK_CONFIG"):
        named = Path(environ["WALHOOK_CONFIG"])
        if not named.exists():
            raise ConfigError(f"$WALHOOK_CONFIG names {named}: file not found")
        return named, str(named)
    local = (cwd or Path.cwd()) / CONFIG_FILE
    if local.exists():
        return local, f"./{CONFIG_FILE}"
    return None, (f"no configuration file (looked for --config, $WALHOOK_CONFIG and ./{CONFIG_FILE}; "
                  "write one with `walhook init`)")


def discover_settings(given: str | None) -> Settings:
    """``load_settings`` of the file ``find_config`` finds (or of the environment alone)."""
    path, origin = find_config(given)
    settings = load_settings(path)
    settings._origin = origin
    return settings


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
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {key}: {message}")
    return "; ".join(lines)


def check_config_text(text: str, where: str) -> Settings:
    """Validate TOML text as a configuration (``ConfigError`` naming the key), without the environment."""
    try:
        return Settings.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(format_validation_error(where, exc)) from exc
