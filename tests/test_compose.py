"""No Docker engine runs here, so check compose statically: every walhook command is real."""

from pathlib import Path

import pytest
import yaml

from walhook.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def walhook_commands() -> list[tuple[str, list[str]]]:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    return [(name, service["command"]) for name, service in compose["services"].items()
            if service.get("image") == "walhook:dev"]


def test_compose_runs_the_whole_pipeline() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    assert {"postgres", "kafka", "cdc", "publisher", "receiver", "api"} <= set(compose["services"])
    assert "wal_level=logical" in compose["services"]["postgres"]["command"]
    assert {command[0] for _, command in walhook_commands()} >= {"cdc", "publisher", "receiver"}


@pytest.mark.parametrize(("service", "command"), walhook_commands())
def test_every_walhook_command_parses(service: str, command: list[str]) -> None:
    args = build_parser().parse_args(command)
    assert callable(args.handler), f"{service}: {command} is not a walhook subcommand"


def test_the_dockerfile_installs_every_package() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    for package in ("cdc", "publisher", "models", "walhook"):
        assert f"COPY {package} ./{package}" in dockerfile


def test_the_compose_config_is_valid() -> None:
    from walhook.config import load_settings

    settings = load_settings(ROOT / "docker" / "walhook.toml")
    assert settings.source is not None and settings.kafka is not None and settings.entities
