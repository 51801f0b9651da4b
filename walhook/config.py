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

from pydantic import ValidationError

from models.errors import ConfigError
from models.settings import Settings

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
