"""No Docker engine runs here, so the image's Dockerfile is checked by reading it (dockerfile-parse):
two stages, the compiled row path built in the first and imported in the second, a non-root user, and
a HEALTHCHECK on the address the compose file and the Kubernetes manifests give every process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
Instruction = tuple[str, str]


def _stages() -> dict[str, list[Instruction]]:
    """Each stage's instructions (name -> [(INSTRUCTION, value)]), comments left out."""
    stages: dict[str, list[Instruction]] = {}
    current: list[Instruction] = []
    for item in DockerfileParser(str(ROOT / "docker" / "Dockerfile")).structure:
        if item["instruction"] == "FROM":
            current = stages.setdefault(item["value"].split()[-1], [])
        elif item["instruction"] != "COMMENT":
            current.append((item["instruction"], item["value"]))
    return stages


def _runs(stage: list[Instruction]) -> str:
    return "\n".join(value for instruction, value in stage if instruction == "RUN")


def _last(stage: list[Instruction], instruction: str) -> str:
    values = [value for name, value in stage if name == instruction]
    assert values, f"no {instruction} in the stage"
    return values[-1]


def test_a_builder_stage_and_a_slim_runtime_stage() -> None:
    stages = _stages()
    assert list(stages) == ["builder", "runtime"]
    runtime = stages["runtime"]
    assert "--mount=type=bind,from=builder,source=/wheels" in _runs(runtime)
    assert not re.search(r"\b(gcc|cython|apt-get install)\b", _runs(runtime), re.I), "a compiler in the runtime"


def test_the_builder_compiles_the_row_path() -> None:
    builder = _stages()["builder"]
    runs = _runs(builder)
    assert re.search(r"apt-get install [^\n]*\bgcc\b", runs), "the builder installs no C compiler"
    assert re.search(r"pip install [^\n]*cython", runs, re.I), "the builder installs no Cython"
    assert "pip wheel" in runs and "--no-build-isolation" in runs
    copied = {source for name, value in builder if name == "COPY" for source in value.split()[:-1]}
    assert {"pyproject.toml", "setup.py", "cdc", "publisher", "control", "models", "walhook"} <= copied


def test_a_wheel_without_the_extension_fails_the_build() -> None:
    runs = _runs(_stages()["builder"])
    pattern = re.search(r'grep -qE "([^"]+)"', runs)
    assert pattern, "the builder does not look for the extension in the wheel"
    assert "exit 1" in runs
    # The pattern finds the file setuptools names the extension, and not its Cython source.
    assert re.search(pattern.group(1), "cdc/_rowpath.cpython-311-x86_64-linux-gnu.so")
    assert not re.search(pattern.group(1), "cdc/_rowpath.pyx")


def test_the_runtime_imports_the_compiled_row_path_at_build_time() -> None:
    assert re.search(r'python -c "import cdc\._rowpath"', _runs(_stages()["runtime"]))


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    user = _last(_stages()["runtime"], "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user  # numeric, so that runAsNonRoot can verify it
    assert f"--uid {uid}" in _runs(_stages()["runtime"])


@pytest.mark.parametrize("setting", ["source", "publisher", "api"])
def test_the_healthcheck_asks_healthz_where_compose_serves_it(setting: str) -> None:
    from walhook.config import load_settings

    runtime = _stages()["runtime"]
    check = _last(runtime, "HEALTHCHECK")
    assert "/healthz" in check and "WALHOOK_HEALTH_ADDRESS" in check
    default = re.search(r"WALHOOK_HEALTH_ADDRESS=(\S+)", _last(runtime, "ENV"))
    assert default, "no default health address"
    settings = load_settings(ROOT / "docker" / "walhook.toml")
    address = {"source": settings.source.metrics_address if settings.source else None,
               "publisher": settings.publisher.metrics_address, "api": settings.api.operator_address}[setting]
    assert address is not None and address.rsplit(":", 1)[1] == default.group(1).rsplit(":", 1)[1]
