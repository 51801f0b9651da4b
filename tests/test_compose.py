"""No Docker engine runs here, so check compose statically: every walhook command is real."""

import ipaddress
import re
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
    for package in ("cdc", "publisher", "control", "models", "walhook"):
        assert f"COPY {package} ./{package}" in dockerfile


def test_the_compose_config_is_valid() -> None:
    from walhook.config import load_settings

    settings = load_settings(ROOT / "docker" / "walhook.toml")
    assert settings.source is not None and settings.kafka is not None and settings.entities


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())  # type: ignore[no-any-return]


def _interpolated(value: str, environment: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``, for what these tests read."""
    def one(match: re.Match[str]) -> str:
        name, operator, word = match.group(1), match.group(2) or "", match.group(3) or ""
        if environment.get(name):
            return environment[name]
        if operator == ":?":
            raise ValueError(f"{name}: {word}")
        return word if operator == ":-" else ""
    return re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", one, value)


def test_the_api_has_no_default_admin_token() -> None:
    token = _compose()["services"]["api"]["environment"]["WALHOOK_API__ADMIN_TOKEN"]
    with pytest.raises(ValueError, match="WALHOOK_ADMIN_TOKEN"):  # compose refuses to start without one
        _interpolated(token, {})
    chosen = "a-long-random-token-of-the-operator"
    assert _interpolated(token, {"WALHOOK_ADMIN_TOKEN": chosen}) == chosen


def test_the_documented_example_admin_token_is_refused() -> None:
    from models.errors import ConfigError
    from walhook.config import load_settings

    example = "change-me-to-a-long-random-admin-token"  # the docs' and compose's, once: copied everywhere
    with pytest.raises(ConfigError, match=r"api\.admin_token: .*example"):
        load_settings(None, api={"admin_token": example})
    assert example not in (ROOT / "docker" / "compose.yaml").read_text()


def test_the_api_is_published_on_loopback_unless_told_otherwise() -> None:
    (port,) = _compose()["services"]["api"]["ports"]
    assert _interpolated(port, {}) == "127.0.0.1:8080:8080"
    assert _interpolated(port, {"WALHOOK_API_BIND": "0.0.0.0"}) == "0.0.0.0:8080:8080"


def test_allowed_networks_admit_only_the_example_receiver() -> None:
    from walhook.config import load_settings

    compose = _compose()
    address = compose["services"]["receiver"]["networks"]["default"]["ipv4_address"]
    assert load_settings(ROOT / "docker" / "walhook.toml").publisher.allowed_networks == [f"{address}/32"]
    (subnet,) = compose["networks"]["default"]["ipam"]["config"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet["subnet"])


def test_no_secret_is_on_a_command_line() -> None:
    compose = _compose()
    for name, command in walhook_commands():
        assert "--secret" not in command and not any("whsec_" in word for word in command), name
        for index, word in enumerate(command):
            if word == "--secret-file":
                path = command[index + 1].split("=", 1)[-1]
                secret = path.removeprefix("/run/secrets/")
                assert secret in compose["services"][name]["secrets"], f"{name}: {path} is not mounted"
                assert compose["secrets"][secret] == {"environment": "ACME_WEBHOOK_SECRET"}
    assert sum("--secret-file" in command for _, command in walhook_commands()) == 2  # setup and receiver
