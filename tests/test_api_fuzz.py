"""Property-based fuzzing of the management API: no generated request gets a 5xx.

schemathesis reads the app's own ``/openapi.json`` and generates requests for every operation,
valid ones (positive mode) and ones that break the schema (negative mode). Each request goes
through one ``TestClient`` whose lifespan holds the real store (a fresh Postgres database), so
the routes run against real SQL. Two passes get past authentication: the organization routes
and the health routes with an organization's API key, the admin routes with the admin token.
Id-based routes are fuzzed twice: with generated ids (mostly unknown, 404) and with the id of a
real organization, key or integration, so that their bodies reach the store; the operations
that delete run last. A few hand-written requests cover inputs the generator rarely builds.

Every 5xx is collected (not raised inside Hypothesis, so every operation is tried and nothing
is shrunk) and the test fails listing each one with its request and response. So is every error
answer that is not the RFC 9457 problem the document declares (``application/problem+json``,
valid against its ``Problem`` schema). The one deliberate
5xx is the replay route answering 503 when the deployment has no ``[kafka]``; it is allowed for
that route and that reason only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from starlette.testclient import TestClient

from control.api.app import create_app
from models.settings import Settings

ADMIN_TOKEN = "a" * 32
BASE_URL = "http://testserver"
EXAMPLES = 25
"""Generated requests per operation, per generation mode and per id variant."""

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: failures are collected, not raised
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
    print_blob=False,
)

# Keys of ``Case.as_transport_kwargs()`` that ``requests.Request`` understands.
_REQUEST_FIELDS = ("method", "url", "headers", "files", "data", "params", "cookies", "json")


def _settings(dsn: str) -> Settings:
    # The fuzzer sends bad credentials by design: the per-address limit on failures would answer 429.
    return Settings(store={"dsn": dsn, "plaintext_secrets": True},
                    api={"admin_token": ADMIN_TOKEN, "auth_failures_per_minute": 10**9},
                    publisher={"allowed_networks": ["127.0.0.1/32"]},
                    entities=[{"table": "public.docs", "entity_key": "docs", "entity_path": "docs/{id}",
                               "collection_path": "docs", "organization_column": "org"}])


@dataclass
class Fuzzer:
    """Sends requests through ``client`` and remembers every 5xx that is not allowed."""

    client: TestClient
    problem: Draft202012Validator | None = None
    """The OpenAPI document's ``Problem`` schema, which every error answer must match."""
    failures: dict[tuple[str, int, str], str] = field(default_factory=dict)
    statuses: dict[str, set[int]] = field(default_factory=dict)
    sent: int = 0

    def send(self, method: str, url: str, *, token: str | None, headers: dict[str, str] | None = None,
             content: bytes | None = None, label: str | None = None) -> Any:
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        # Header values go on the wire as latin-1, as a real server would receive them.
        raw = {k: v.encode("latin-1") if isinstance(v, str) else v for k, v in headers.items()}
        self.sent += 1
        try:
            response = self.client.request(method, url, headers=raw, content=content)
        except Exception as exc:
            # TestClient re-raises what the app did not handle; a server would have answered 500.
            self._record(label or f"{method} {url}", method, url, headers, content, 500,
                         f"unhandled {type(exc).__module__}.{type(exc).__name__}: {exc}")
            return None
        self.statuses.setdefault(label or f"{method} {url}", set()).add(response.status_code)
        if response.status_code >= 500 and not _allowed(method, url, response):
            self._record(label or f"{method} {url}", method, url, headers, content, response.status_code,
                         response.text)
        elif response.status_code >= 400 and (wrong := self._not_a_problem(response)):
            self._record(label or f"{method} {url}", method, url, headers, content, response.status_code,
                         f"not the documented problem ({wrong}): {response.text}")
        return response

    def _not_a_problem(self, response: Any) -> str | None:
        """Why an error answer is not an RFC 9457 problem matching the document's schema; None if it is."""
        if response.headers.get("content-type") != "application/problem+json":
            return f"content-type {response.headers.get('content-type')}"
        errors = [] if self.problem is None else list(self.problem.iter_errors(response.json()))
        return errors[0].message if errors else None

    def send_case(self, case: Any, token: str | None) -> None:
        kwargs = case.as_transport_kwargs(base_url=BASE_URL)
        # requests serializes exactly what schemathesis means (json, raw data, params, cookies);
        # the prepared request then goes through the app's TestClient unchanged.
        prepared = requests.Request(**{k: v for k, v in kwargs.items() if k in _REQUEST_FIELDS}).prepare()
        body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
        headers = {k: v for k, v in prepared.headers.items() if k.lower() != "content-length"}
        self.send(prepared.method or case.method, prepared.url or "", token=token, headers=headers, content=body,
                  label=case.operation.label)

    def _record(self, label: str, method: str, url: str, headers: dict[str, str], content: bytes | None,
                status: int, text: str) -> None:
        key = (label, status, text[:80])
        if key in self.failures:
            return
        shown = {k: ("Bearer <token>" if k.lower() == "authorization" else v) for k, v in headers.items()
                 if k.lower() not in ("user-agent", "accept", "accept-encoding", "connection")
                 and not k.lower().startswith("x-schemathesis")}
        self.failures[key] = (f"{label}: {status}\n  request: {method} {url}\n  headers: {shown}\n"
                              f"  body: {(content or b'')[:500]!r}\n  response: {text[:500]}")


def _allowed(method: str, url: str, response: Any) -> bool:
    """The documented 5xx: replay without a ``[kafka]`` section in the configuration."""
    path = url.split("?", 1)[0]
    return (method == "POST" and path.endswith("/replay") and response.status_code == 503
            and "needs a [kafka] section" in response.text)


def _fuzz(fuzzer: Fuzzer, operation: Any, token: Callable[[], str], mode: GenerationMode,
          path_parameters: dict[str, Any] | None = None) -> None:
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

    @FUZZ_SETTINGS
    @given(case=strategy)
    def run(case: Any) -> None:
        fuzzer.send_case(case, token())

    run()


def _operations(schema: Any) -> list[Any]:
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"schemathesis could not read an operation: {result}"
        operations.append(result.ok())
    # Deleting last: a deleted organization, key or integration would turn later requests into 401 / 404.
    return sorted(operations, key=lambda op: op.method.upper() == "DELETE")


def _has_inputs(operation: Any) -> bool:
    """Whether negative mode has anything to break (it cannot generate for an operation without inputs)."""
    parameters = (operation.path_parameters, operation.query, operation.headers, operation.cookies)
    return any(len(group) for group in parameters) or bool(len(operation.body))


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(database))) as client:
        yield client


def _created(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


@dataclass
class Tenant:
    """What the id-based routes are fuzzed against; the fuzzer deletes some of it, :meth:`ensure` brings it back."""

    client: TestClient
    key: str = ""
    spare_key: int = 0
    integration: int = 0

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def ensure(self) -> None:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        # "acme" is the organization the key belongs to; "victim" is the one the admin routes get by id.
        for organization in ("acme", "victim"):
            created = self.client.post("/v1/organizations", json={"id": organization}, headers=admin)
            assert created.status_code in (201, 409), created.text
        keys = self.client.get("/v1/keys", headers=self.auth())
        if keys.status_code == 401:
            self.key = _created(self.client.post("/v1/organizations/acme/keys", json={"name": "fuzz"},
                                                 headers=admin))["key"]
            keys = self.client.get("/v1/keys", headers=self.auth())
        assert keys.status_code == 200, keys.text
        # A second key, for the revoke route to revoke by id: revoking the fuzzer's own key would stop it.
        if not any(row["id"] == self.spare_key and row["revoked_at"] is None for row in keys.json()):
            self.spare_key = _created(self.client.post("/v1/keys", json={"name": "spare"}, headers=self.auth()))["id"]
        if self.client.get(f"/v1/integrations/{self.integration}", headers=self.auth()).status_code != 200:
            self.integration = _created(self.client.post("/v1/integrations", headers=self.auth(), json={
                "url": "http://127.0.0.1:9/hook", "events": ["docs:*"]}))["id"]

    def ids(self) -> dict[str, Any]:
        return {"organization_id": "victim", "key_id": self.spare_key, "integration_id": self.integration}


def test_no_request_gets_a_server_error(client: TestClient) -> None:
    started = time.monotonic()
    fuzzer = Fuzzer(client)
    tenant = Tenant(client)
    tenant.ensure()
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    fuzzer.problem = Draft202012Validator({"$ref": "#/components/schemas/Problem", **spec.json()})
    schema = schemathesis.openapi.from_dict(spec.json())
    operations = _operations(schema)
    assert len(operations) >= 25, [op.label for op in operations]

    def admin_only(op: Any) -> bool:  # the admin routes and the operator endpoints
        return bool(op.path.startswith("/v1/organizations") or op.path in ("/metrics", "/readyz", "/v1/status"))

    passes: list[tuple[Callable[[Any], bool], Callable[[], str]]] = [
        (lambda op: not admin_only(op), lambda: tenant.key),
        (admin_only, lambda: ADMIN_TOKEN),
    ]
    for selects, token in passes:
        chosen = [op for op in operations if selects(op)]
        # Generated ids first, then the same operations on real ids (deleting ones still last).
        for operation in chosen:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)[:2 if _has_inputs(operation) else 1]:
                tenant.ensure()
                _fuzz(fuzzer, operation, token, mode)
        for operation in chosen:
            tenant.ensure()
            ids = {p.name: tenant.ids()[p.name] for p in operation.path_parameters if p.name in tenant.ids()}
            if ids:
                _fuzz(fuzzer, operation, token, GenerationMode.POSITIVE, ids)

    tenant.ensure()
    _hand_written(fuzzer, tenant.key, tenant.integration)
    elapsed = time.monotonic() - started
    # The fuzzing got past authentication: every operation answered something other than 401.
    only_401 = sorted(op.label for op in operations if fuzzer.statuses.get(op.label, {401}) <= {401})
    assert not only_401, f"never authenticated: {only_401}"
    assert fuzzer.sent >= 500, f"only {fuzzer.sent} requests were sent in {elapsed:.0f}s"
    if fuzzer.failures:
        pytest.fail(f"{len(fuzzer.failures)} server error(s) in {fuzzer.sent} requests ({elapsed:.0f}s):\n\n"
                    + "\n\n".join(fuzzer.failures.values()), pytrace=False)


def _hand_written(fuzzer: Fuzzer, key: str, integration: int) -> None:
    """Inputs the generator rarely builds: hosts that do not resolve, odd ids, odd bodies, odd auth."""
    base = f"/v1/integrations/{integration}"
    json_type = {"content-type": "application/json"}
    cases: list[tuple[str, str, str | None, bytes | None]] = [
        ("POST", "/v1/integrations", key, b'{"url": "http://does-not-exist.invalid/hook", "events": ["docs:*"]}'),
        ("PATCH", base, key, b'{"url": "http://does-not-exist.invalid/hook"}'),
        ("PATCH", base, key, b'{"events": null}'),
        ("PATCH", base, key, b'{"name": null, "url": null, "ordering": null, "batch_size": null}'),
        ("POST", "/v1/integrations", key, b'{"url": "http://[::1/hook", "events": ["docs:*"]}'),
        ("POST", "/v1/integrations", key, b'{"url": "http://:0/", "events": ["docs:*"]}'),
        ("POST", "/v1/integrations", key, b'{"url": "http://127.0.0.1:99999/x", "events": ["docs:*"]}'),
        ("POST", "/v1/integrations", key, b'{"url": "http://127.0.0.1:9/hook", "events": ["a:created, ,deleted"]}'),
        ("POST", "/v1/integrations", key, b'{"url": "http://127.0.0.1:9/hook", "events": ["docs:*"], '
                                          b'"headers": {"X-A": "\\u0000"}}'),
        ("POST", "/v1/integrations", key, b'{"url": "http://127.0.0.1:9/\\u0000", "events": ["d\\u0000"]}'),
        ("POST", "/v1/integrations", key, b'{"url": "http://127.0.0.1:9/hook", "events": ["docs:*"], '
                                          b'"name": "\\u0000"}'),
        ("POST", f"{base}/sample", key, b'{"entity_key": "docs", "operation": "deleted"}'),
        ("POST", f"{base}/replay", key, b'{"offset": 0}'),
        ("POST", f"{base}/replay", key, b'{"offset": 9223372036854775808}'),
        ("POST", f"{base}/recover", key, b'{"since": "2024-01-01T00:00:00Z"}'),
        ("POST", f"{base}/recover", key, b'{"since": "0001-01-01T00:00:00"}'),
        ("POST", f"{base}/secret/rotate", key, b'{"overlap_hours": 168}'),
        ("POST", "/v1/keys", key, b'{"name": "\\u0000"}'),
        ("POST", "/v1/organizations", ADMIN_TOKEN, b'{"id": "acme"}'),
        ("POST", "/v1/organizations/nobody/keys", ADMIN_TOKEN, b'{"name": "x"}'),
        ("GET", "/v1/integrations/9223372036854775808", key, None),
        ("GET", "/v1/integrations/-9223372036854775809", key, None),
        ("GET", "/v1/deliveries/9223372036854775808", key, None),
        ("POST", "/v1/deliveries/9223372036854775807/redeliver", key, None),
        ("DELETE", "/v1/keys/9223372036854775808", key, None),
        ("GET", "/v1/deliveries?integration_id=9223372036854775808", key, None),
        ("GET", "/v1/deliveries?cursor=9223372036854775808", key, None),
        ("GET", "/v1/deliveries?since=0001-01-01", key, None),
        ("GET", "/v1/deliveries?since=9999-12-31T23:59:59%2B14:00", key, None),
        ("GET", "/v1/deliveries?since=2024-01-01T00:00:00-23:59", key, None),
        ("GET", "/v1/deliveries?entity_key=%00", key, None),
        ("GET", "/v1/deliveries?event_id=%00", key, None),
        ("GET", "/v1/organizations/%00", ADMIN_TOKEN, None),
        ("GET", "/v1/keys", "whk_\x00", None),
        ("GET", "/v1/keys", "x" * 5000, None),
        ("GET", "/v1/organizations", "\xe9" * 32, None),
    ]
    for method, url, token, body in cases:
        fuzzer.send(method, url, token=token, headers=json_type if body is not None else None, content=body)
