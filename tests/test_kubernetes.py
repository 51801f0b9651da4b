"""The Kubernetes manifests (deploy/kubernetes), rendered as `kubectl apply -k` would and checked without a
cluster: every object against the Kubernetes schemas kubernetes-validate ships (offline), the
ServiceMonitor against the Prometheus Operator's CRD schema (vendored), and what walhook needs of them:
one capture that never runs twice, probes on the address the configuration serves, secrets only from
Secrets, and a configuration each process accepts."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from walhook.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
WORKLOADS = {"StatefulSet", "Deployment", "Job"}
Object = dict[str, Any]


def _render() -> list[Object]:
    """`kubectl kustomize` of the manifests: what `kubectl apply -k deploy/kubernetes` sends."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the manifests (apt-get install kubectl)"
    rendered = subprocess.run([kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    return [item for item in yaml.safe_load_all(rendered.stdout) if item]


OBJECTS = _render()


def _of(kind: str) -> list[Object]:
    return [item for item in OBJECTS if item["kind"] == kind]


def _named(kind: str, name: str) -> Object:
    (found,) = [item for item in _of(kind) if item["metadata"]["name"] == name]
    return found


def _containers() -> list[tuple[Object, Object]]:
    """(workload, container) of every walhook container."""
    return [(item, container) for item in OBJECTS if item["kind"] in WORKLOADS
            for container in item["spec"]["template"]["spec"]["containers"]]


def _label(item: Object) -> str:
    return f"{item['kind']}/{item['metadata']['name']}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("item", [item for item in OBJECTS if item["kind"] != "ServiceMonitor"], ids=_label)
def test_every_object_follows_the_kubernetes_schema(item: Object, version: str) -> None:
    kubernetes_validate.validate(item, version, strict=True)  # strict: an unknown (misspelled) field fails


def test_a_misspelled_field_fails_validation() -> None:
    job = json.loads(json.dumps(_named("Job", "walhook-migrate")))
    job["spec"]["backofLimit"] = 4
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSIONS[0], strict=True)


def test_the_service_monitor_follows_its_crd_schema() -> None:
    schema = json.loads((MANIFESTS / "schemas" / "servicemonitor-v1.json").read_text())
    (monitor,) = _of("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    jsonschema.validate(monitor, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**monitor, "spec": {**monitor["spec"], "endpoints": [{"port": 9465}]}}, schema)


def test_the_service_monitor_scrapes_every_process() -> None:
    (monitor,) = _of("ServiceMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    port = monitor["spec"]["endpoints"][0]["port"]
    scraped = {item["metadata"]["labels"]["app.kubernetes.io/component"] for item in _of("Service")
               if wanted.items() <= item["metadata"]["labels"].items()
               and port in {p["name"] for p in item["spec"]["ports"]}}
    assert scraped == {"capture", "publisher", "api"}


def test_capture_is_one_stateful_replica_and_nothing_else_captures() -> None:
    capture = _named("StatefulSet", "walhook-capture")
    assert capture["spec"]["replicas"] == 1
    assert _named("Service", capture["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    capturing = [_label(item) for item, container in _containers() if container["args"][0] == "cdc"]
    assert capturing == ["StatefulSet/walhook-capture"]


@pytest.mark.parametrize(("kind", "name", "command"), [
    ("Deployment", "walhook-publisher", "publisher"), ("Deployment", "walhook-api", "api"),
    ("Job", "walhook-migrate", "migrate")])
def test_each_process_has_its_workload(kind: str, name: str, command: str) -> None:
    (container,) = _named(kind, name)["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == command


@pytest.mark.parametrize("pair", _containers(), ids=lambda pair: _label(pair[0]))
def test_every_command_is_a_walhook_command(pair: tuple[Object, Object]) -> None:
    args = build_parser().parse_args(pair[1]["args"])
    assert callable(args.handler)


@pytest.mark.parametrize("name", ["walhook-publisher", "walhook-api"])
def test_scalable_processes_have_a_disruption_budget(name: str) -> None:
    budget = _named("PodDisruptionBudget", name)
    pods = _named("Deployment", name)["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pods.items()


def test_every_process_runs_as_non_root_with_resources() -> None:
    for workload, container in _containers():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, _label(workload)
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, _label(workload)
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), _label(workload)
        assert "memory" in container["resources"]["limits"], _label(workload)


def _environment(container: Object) -> dict[str, str]:
    """The container's environment, each Secret's value replaced by a valid stand-in."""
    import base64

    stand_ins = {"source-dsn": "postgresql://app@db/app", "store-dsn": "postgresql://walhook@db/walhook",
                 "secret-keys": "k1:" + base64.b64encode(bytes(32)).decode(), "admin-token": "t" * 32}
    environment = {}
    for variable in container.get("env", []):
        environment[variable["name"]] = stand_ins[variable["valueFrom"]["secretKeyRef"]["key"]]
    return environment


def _settings(container: Object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The settings the container's process reads: the ConfigMap's file and the container's environment."""
    from walhook.config import load_settings

    (config_map,) = _of("ConfigMap")
    path = tmp_path / "walhook.toml"
    path.write_text(config_map["data"]["walhook.toml"])
    for name, value in _environment(container).items():
        monkeypatch.setenv(name, value)
    return load_settings(path)


SECTIONS = {"cdc": ("source", "kafka", "store"), "publisher": ("kafka", "store"), "api": ("store",),
            "migrate": ("store",)}


@pytest.mark.parametrize("pair", _containers(), ids=lambda pair: _label(pair[0]))
def test_the_configuration_and_secrets_give_each_process_what_it_needs(
        pair: tuple[Object, Object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    workload, container = pair
    settings = _settings(container, monkeypatch, tmp_path)
    command = container["args"][0]
    settings.require(*SECTIONS[command])
    assert settings.store.secret_keys, f"{_label(workload)}: no secret keys"  # never plain-text secrets
    if command == "cdc":
        assert settings.entities
    if command == "api":
        assert settings.api.admin_token and settings.api.host == "0.0.0.0"
        assert {p["containerPort"] for p in container["ports"]} >= {settings.api.port}


@pytest.mark.parametrize("pair", [pair for pair in _containers() if pair[1]["args"][0] != "migrate"],
                         ids=lambda pair: _label(pair[0]))
def test_probes_ask_healthz_and_readyz_where_the_process_serves_them(
        pair: tuple[Object, Object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    workload, container = pair
    settings = _settings(container, monkeypatch, tmp_path)
    address = {"cdc": settings.source.metrics_address if settings.source else None,
               "publisher": settings.publisher.metrics_address,
               "api": settings.api.operator_address}[container["args"][0]]
    assert address, f"{_label(workload)}: no metrics address configured"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        check = container[probe]["httpGet"]
        assert check["path"] == path and ports[check["port"]] == int(address.rsplit(":", 1)[1]), probe


def test_secrets_come_from_kubernetes_secrets_only() -> None:
    for workload, container in _containers():
        for variable in container.get("env", []):
            assert "valueFrom" in variable and "secretKeyRef" in variable["valueFrom"], (_label(workload), variable)
    (config_map,) = _of("ConfigMap")
    config = tomllib.loads(config_map["data"]["walhook.toml"])
    assert "dsn" not in config["source"] and "dsn" not in config["store"] and "secret_keys" not in config["store"]
    assert "admin_token" not in config["api"]
