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


def test_compose_follows_the_compose_specification() -> None:
    """docker/compose-spec.json is the Compose Specification's schema, vendored (see docker/README.md)."""
    import json

    import jsonschema

    schema = json.loads((ROOT / "docker" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{error.json_path}: {error.message}" for error in validator.iter_errors(_compose())]
    assert errors == []
    misspelled = {**_compose(), "services": {"cdc": {"image": "walhook:dev", "restrat": "always"}}}
    assert any("restrat" in error.message for error in validator.iter_errors(misspelled))


def _documented_compose_command() -> str:
    """The lines of the getting-started page's compose block, as one shell script."""
    page = (ROOT / "docs" / "getting-started.md").read_text()
    blocks = [block for block in re.findall(r"^```\w*\n(.*?)^```$", page, re.S | re.M) if "docker compose" in block]
    assert len(blocks) == 1, "one compose block expected in docs/getting-started.md"
    return blocks[0]


def test_the_documented_command_sets_every_variable_compose_requires() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker" / "compose.yaml").read_text()))
    assert {"WALHOOK_SECRET_KEYS", "WALHOOK_ADMIN_TOKEN"} <= required
    script = _documented_compose_command()
    exported = set(re.findall(r"^export (\w+)=", script, re.M))
    assert required <= exported, f"the docs' compose command leaves out {sorted(required - exported)}"


def test_the_documented_secret_key_is_one_walhook_accepts() -> None:
    import base64
    import os

    from walhook.config import load_settings

    (line,) = [line for line in _documented_compose_command().splitlines() if "WALHOOK_SECRET_KEYS=" in line]
    # What `$(openssl rand -base64 32)` prints: 32 random bytes in base64.
    value = line.split("=", 1)[1].replace("$(openssl rand -base64 32)", base64.b64encode(os.urandom(32)).decode())
    store = {"dsn": "postgresql://app:app@postgres:5432/app", "secret_keys": value}
    assert load_settings(None, store=store).store.secret_keys == [value]  # type: ignore[union-attr]
