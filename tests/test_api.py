"""The management API on a real store: every route, its auth, its validation, tenant isolation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from control.api.app import create_app
from models.settings import Settings

ADMIN = "admin-token-" + "x" * 20
DOCS = {"table": "public.docs", "entity_key": "docs", "entity_path": "docs/{id}", "collection_path": "docs",
        "organization_column": "org"}


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    settings = Settings(store={"dsn": database, "plaintext_secrets": True},
                        api={"admin_token": ADMIN, "max_body_bytes": 4096},
                        publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[DOCS])
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def admin() -> dict[str, str]:
    return {"authorization": f"Bearer {ADMIN}"}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def tenant(client: TestClient, org: str) -> dict[str, str]:
    """Create an organization and return its API key's headers."""
    assert client.post("/v1/organizations", json={"id": org}, headers=admin()).status_code == 201
    created = client.post(f"/v1/organizations/{org}/keys", json={"name": "backend"}, headers=admin())
    assert created.status_code == 201
    return bearer(created.json()["key"])


def make_integration(client: TestClient, auth: dict[str, str], **extra: Any) -> dict[str, Any]:
    body = {"url": "http://127.0.0.1:9/hook", "events": ["docs:*"], **extra}
    response = client.post("/v1/integrations", json=body, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_the_settings_page_flow(client: TestClient) -> None:
    created = client.post("/v1/organizations", json={"id": "acme"}, headers=admin())
    assert created.status_code == 201 and created.json()["secret"].startswith("whsec_")
    assert client.post("/v1/organizations", json={"id": "acme"}, headers=admin()).status_code == 409
    key = client.post("/v1/organizations/acme/keys", json={"name": "backend"}, headers=admin()).json()
    assert key["key"].startswith("whk_") and key["prefix"] in key["key"]
    acme = bearer(key["key"])
    keys = client.get("/v1/keys", headers=acme).json()
    assert [k["name"] for k in keys] == ["backend"] and "key" not in keys[0]
    integration = make_integration(client, acme, name="CRM", headers={"x-tenant": "acme"}, batch_size=5)
    assert integration["name"] == "CRM" and integration["batch_size"] == 5
    assert integration["secrets"] == [created.json()["secret"]]  # shown at creation...
    assert "secrets" not in client.get(f"/v1/integrations/{integration['id']}", headers=acme).json()  # ...not later
    path = f"/v1/integrations/{integration['id']}"
    assert client.get(path, headers=acme).json()["url"] == "http://127.0.0.1:9/hook"
    patched = client.patch(path, json={"events": ["docs:created"], "ordering": "none"}, headers=acme).json()
    assert patched["events"] == ["docs:created"] and patched["ordering"] == "none"
    assert client.post(f"{path}/disable", headers=acme).json()["enabled"] is False
    assert client.post(f"{path}/enable", headers=acme).json()["enabled"] is True
    assert client.get(f"{path}/secret", headers=acme).json()["secrets"] == [created.json()["secret"]]
    rotated = client.post(f"{path}/secret/rotate", json={"overlap_hours": 1}, headers=acme).json()["secrets"]
    assert rotated[1:] == [created.json()["secret"]]  # its own secret now, and the organization's for the overlap
    catalogue = client.get("/v1/catalogue", headers=acme).json()
    assert catalogue[0]["entityKey"] == "docs"
    assert set(catalogue[0]["examples"]) == {"created", "updated", "deleted", "read"}
    sample = client.post(f"{path}/sample", json={"entity_key": "docs", "operation": "updated"}, headers=acme).json()
    assert sample["status"] is None and "Connect" in (sample["error"] or "")  # nothing listens on port 9
    page = client.get("/v1/deliveries", headers=acme).json()
    assert page == {"items": [], "next_cursor": None}
    assert client.delete(path, headers=acme).status_code == 204
    assert client.get(path, headers=acme).status_code == 404
    assert client.delete(f"/v1/keys/{keys[0]['id']}", headers=acme).status_code == 204
    assert client.get("/v1/keys", headers=acme).status_code == 401  # the revoked key no longer works


def test_listings_never_show_secrets_or_keys(client: TestClient) -> None:
    acme = tenant(client, "acme")
    make_integration(client, acme)
    for path in ("/v1/integrations", "/v1/keys", "/v1/deliveries"):
        text = client.get(path, headers=acme).text
        assert "whsec_" not in text and "whk_" not in text
    assert "whsec_" not in client.get("/v1/organizations", headers=admin()).text


@pytest.mark.parametrize(("body", "field"), [
    ({"url": "ftp://example.com/x", "events": ["docs:*"]}, "url"),
    ({"url": "http://127.0.0.1:9/x", "events": ["docs:exploded"]}, "events"),
    ({"url": "http://127.0.0.1:9/x", "events": []}, "events"),
    ({"url": "http://127.0.0.1:9/x", "events": ["docs:*"], "batch_size": 2000}, "batch_size"),
    ({"url": "http://127.0.0.1:9/x", "events": ["docs:*"], "headers": {"webhook-id": "x"}}, "headers"),
    ({"url": "http://127.0.0.1:9/x", "events": ["docs:*"], "name": "n" * 201}, "name"),
    ({"url": "http://127.0.0.1:9/x", "events": ["docs:*"], "colour": "red"}, "colour"),
])
def test_validation_errors_name_the_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    response = client.post("/v1/integrations", json=body, headers=tenant(client, "acme"))
    assert response.status_code == 422
    assert any(field in [str(part) for part in error["loc"]] for error in response.json()["errors"]), response.text


def test_private_destinations_are_refused_at_creation(client: TestClient) -> None:
    response = client.post("/v1/integrations", json={"url": "http://10.0.0.7/hook", "events": ["docs:*"]},
                           headers=tenant(client, "acme"))
    assert response.status_code == 422 and "private address" in response.json()["detail"]


def test_refusals_never_tell_what_the_deployment_resolves(database: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(store={"dsn": database, "plaintext_secrets": True},
                        api={"admin_token": ADMIN})  # nothing private allowed
    with TestClient(create_app(settings)) as client:
        _refusals_never_tell_what_the_deployment_resolves(client, caplog)


def _refusals_never_tell_what_the_deployment_resolves(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    acme = tenant(client, "acme")
    for url in ("http://localhost:9/hook", "http://nothing.invalid/hook"):
        response = client.post("/v1/integrations", json={"url": url, "events": ["docs:*"]}, headers=acme)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail == f"{url}: destination not allowed (the host name does not resolve to a public address)"
    assert "is a loopback address" in caplog.text and "nothing.invalid/hook: the host name does not resolve (" \
        in caplog.text  # ...which operators read in the server's log


def test_oversized_and_malformed_bodies(client: TestClient) -> None:
    acme = tenant(client, "acme")
    json_headers = {**acme, "content-type": "application/json"}
    big = client.post("/v1/integrations", content=b"{" + b" " * 5000 + b"}", headers=acme)
    assert big.status_code == 413 and big.json()["detail"] == "request body over 4096 bytes (the API's max_body_bytes)"
    # Without Content-Length (chunked), the body is counted as it arrives, never read whole.
    chunks = iter([b'{"url": "http://127.0.0.1:9/x", ', b'"name": "' + b"n" * 5000 + b'"}'])
    streamed = client.post("/v1/integrations", content=chunks, headers=json_headers)
    assert streamed.status_code == 413 and "over 4096 bytes" in streamed.json()["detail"]
    broken = client.post("/v1/integrations", content=b'{"url": ', headers=json_headers)
    assert broken.status_code == 422
    (error,) = broken.json()["errors"]
    assert error["type"] == "json_invalid" and error["detail"] == "JSON decode error" and error["loc"] == ["body", 8]
    not_object = client.post("/v1/integrations", content=b"[1, 2]", headers=json_headers)
    assert not_object.status_code == 422 and "valid dictionary" in not_object.json()["errors"][0]["detail"]
    assert client.post("/v1/integrations", content=b"{}", headers={**acme, "content-length": "x"}).status_code == 413


def test_credentials_are_checked(client: TestClient) -> None:
    acme = tenant(client, "acme")
    assert client.get("/v1/organizations", headers=acme).status_code == 401  # an org key is not the admin token
    assert client.get("/v1/organizations").status_code == 401
    assert client.get("/v1/integrations", headers=admin()).status_code == 401  # nor the reverse
    assert client.get("/v1/integrations", headers=bearer("whk_nope_nope")).status_code == 401
    forged = acme["authorization"][:-3] + "AAA"
    assert client.get("/v1/integrations", headers={"authorization": forged}).status_code == 401


def _concrete(path: str, ids: dict[str, Any]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), path)


BODIES = {"/v1/integrations/{integration_id}": {"name": "stolen"},
          "/v1/integrations/{integration_id}/secret/rotate": {},
          "/v1/integrations/{integration_id}/sample": {"entity_key": "docs"},
          "/v1/integrations/{integration_id}/recover": {"since": "2020-01-01T00:00:00Z"},
          "/v1/integrations/{integration_id}/replay": {"offset": 0}}


def test_every_route_hides_another_organizations_resources(client: TestClient, database: str) -> None:
    acme, globex = tenant(client, "acme"), tenant(client, "globex")
    integration = make_integration(client, acme, events=["docs:*,read"])
    key_id = client.get("/v1/keys", headers=acme).json()[0]["id"]
    delivery_id = _a_delivery(database, integration["id"])
    job_id = client.post(f"/v1/integrations/{integration['id']}/replay", json={"offset": 0}, headers=acme).json()["id"]
    backfill_id = client.post("/v1/backfills", json={"entity_key": "docs"}, headers=acme).json()["id"]
    ids = {"integration_id": integration["id"], "delivery_id": delivery_id, "key_id": key_id, "job_id": job_id,
           "backfill_id": backfill_id, "action": "pause"}
    walked = []
    for path, operations in client.get("/openapi.json").json()["paths"].items():  # every published route
        if not path.startswith("/v1/") or path.startswith("/v1/organizations") or "{" not in path:
            continue
        for method in operations:
            response = client.request(method.upper(), _concrete(path, ids), json=BODIES.get(path, {}), headers=globex)
            assert response.status_code == 404, f"{method} {path}: {response.status_code} {response.text}"
            walked.append(f"{method} {path}")
    assert len(walked) == 17, walked  # every organization route that names a resource; update when adding one
    # ...and acme still sees its own things, untouched by globex's attempts.
    assert client.get(f"/v1/integrations/{integration['id']}", headers=acme).json()["name"] == integration["name"]
    assert client.get(f"/v1/deliveries/{delivery_id}", headers=acme).status_code == 200
    assert client.get("/v1/integrations", headers=globex).json() == []
    assert client.get("/v1/deliveries", headers=globex).json()["items"] == []
    assert client.get("/v1/replay-jobs", headers=globex).json() == []
    assert client.get(f"/v1/replay-jobs/{job_id}", headers=acme).json()["cancel_requested"] is False


def _a_delivery(database: str, integration_id: int) -> int:
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        row = conn.execute("INSERT INTO walhook.deliveries (integration_id, organization_id, event_id, webhook_id, "
                           "entity_key, entity_path, operation, body) VALUES (%s, 'acme', 'evt_1', %s, 'docs', "
                           "'docs/1', 'created', '{}') RETURNING id", [integration_id, f"evt_1_i{integration_id}"]
                           ).fetchone()
    assert row is not None
    return int(row[0])


def test_deliveries_filters_cursor_detail_and_redeliver(client: TestClient, database: str) -> None:
    acme = tenant(client, "acme")
    integration = make_integration(client, acme)
    first = _a_delivery(database, integration["id"])
    page = client.get("/v1/deliveries", params={"limit": 1, "status": "pending", "entity_key": "docs"},
                      headers=acme).json()
    assert [item["id"] for item in page["items"]] == [first] and page["next_cursor"] == first
    assert client.get("/v1/deliveries", params={"cursor": first}, headers=acme).json()["items"] == []
    assert client.get("/v1/deliveries", params={"status": "nope"}, headers=acme).status_code == 422
    detail = client.get(f"/v1/deliveries/{first}", headers=acme).json()
    assert detail["body"] == "{}" and detail["attempts_log"] == []
    scheduled = client.post(f"/v1/deliveries/{first}/redeliver", headers=acme).json()["scheduled"]
    assert scheduled[0]["id"] == first
    recovered = client.post(f"/v1/integrations/{integration['id']}/recover", json={"since": "2020-01-01T00:00:00"},
                            headers=acme).json()
    assert recovered == {"scheduled": []}
    replay = client.post(f"/v1/integrations/{integration['id']}/replay", json={"offset": 0}, headers=acme)
    assert replay.status_code == 202 and replay.json()["state"] == "running"  # a job a publisher carries out
    job = client.get(f"/v1/replay-jobs/{replay.json()['id']}", headers=acme).json()
    assert (job["start_offset"], job["scheduled"]) == (0, 0)
    cancelled = client.post(f"/v1/replay-jobs/{job['id']}/cancel", headers=acme).json()
    assert cancelled["cancel_requested"] is True


def test_health_readiness_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 401 and client.get("/metrics").status_code == 401
    ready = client.get("/readyz", headers=admin()).json()
    assert ready["ready"] is True and ready["checks"]["store"] == "ok"
    metrics = client.get("/metrics", headers=admin()).text
    assert "# TYPE walhook_retry_backlog gauge\nwalhook_retry_backlog 0.0\n" in metrics
    assert "# TYPE walhook_attempt_duration_seconds histogram\n" in metrics
    assert 'walhook_attempt_duration_seconds_bucket{le="+Inf"} 0.0\n' in metrics
    assert 'walhook_delivery_log_bytes{table="attempts"} ' in metrics
    assert client.get("/openapi.json").json()["info"]["title"] == "walhook"


# (method, path, a body that fails validation) for every organization route; None: the route takes no body,
# so the invalid input is a malformed path parameter instead.
ORGANIZATION_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("get", "/v1/keys", None), ("post", "/v1/keys", {"name": ""}), ("delete", "/v1/keys/{key_id}", None),
    ("get", "/v1/integrations", None), ("post", "/v1/integrations", {"url": "x", "events": []}),
    ("get", "/v1/integrations/{integration_id}", None),
    ("patch", "/v1/integrations/{integration_id}", {"batch_size": 0}),
    ("delete", "/v1/integrations/{integration_id}", None),
    ("post", "/v1/integrations/{integration_id}/enable", None),
    ("post", "/v1/integrations/{integration_id}/disable", None),
    ("get", "/v1/integrations/{integration_id}/secret", None),
    ("post", "/v1/integrations/{integration_id}/secret/rotate", {"overlap_hours": -1}),
    ("post", "/v1/secret/rotate", {"overlap_hours": 10_000}),
    ("post", "/v1/integrations/{integration_id}/sample", {"entity_key": "docs", "operation": "exploded"}),
    ("get", "/v1/catalogue", None), ("get", "/v1/deliveries", None),
    ("get", "/v1/deliveries/{delivery_id}", None), ("post", "/v1/deliveries/{delivery_id}/redeliver", None),
    ("post", "/v1/integrations/{integration_id}/recover", {"since": "yesterday"}),
    ("post", "/v1/integrations/{integration_id}/replay", {"offset": -5}),
    ("get", "/v1/replay-jobs", None), ("get", "/v1/replay-jobs/{job_id}", None),
    ("post", "/v1/replay-jobs/{job_id}/cancel", None), ("get", "/v1/usage", None),
    ("post", "/v1/portal-links", {"expiry_hours": 25}), ("post", "/v1/portal-links/revoke", {"session_id": ""}),
    ("get", "/v1/backfills", None), ("post", "/v1/backfills", {"entity_key": "docs", "filter": ""}),
    ("get", "/v1/backfills/{backfill_id}", None), ("post", "/v1/backfills/{backfill_id}/{action}", None),
]
ADMIN_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("get", "/v1/organizations", None), ("post", "/v1/organizations", {"id": "has spaces"}),
    ("get", "/v1/organizations/{organization_id}", None), ("delete", "/v1/organizations/{organization_id}", None),
    ("post", "/v1/organizations/{organization_id}/keys", {"name": "k" * 201}),
    ("post", "/v1/organizations/{organization_id}/portal-links", {"capabilities": ["everything"]}),
    ("get", "/v1/status", None),
]


def test_the_route_tables_cover_the_published_api(client: TestClient) -> None:
    published = {(method, path) for path, operations in client.get("/openapi.json").json()["paths"].items()
                 for method in operations if path.startswith("/v1/")}
    assert published == {(m, p) for m, p, _ in ORGANIZATION_ROUTES + ADMIN_ROUTES}


@pytest.mark.parametrize(("method", "path", "bad"), ORGANIZATION_ROUTES + ADMIN_ROUTES)
def test_every_route_refuses_a_wrong_key(client: TestClient, method: str, path: str, bad: Any) -> None:
    concrete = _concrete(path, {"integration_id": 1, "delivery_id": 1, "key_id": 1, "organization_id": 1,
                                "job_id": 1, "backfill_id": 1, "action": "pause"})
    for headers in ({}, bearer("whk_0000_wrong"), {"authorization": "Basic abc"}):
        assert client.request(method.upper(), concrete, json={}, headers=headers).status_code == 401


@pytest.mark.parametrize(("method", "path", "bad"), ORGANIZATION_ROUTES + ADMIN_ROUTES)
def test_every_route_names_what_is_invalid(client: TestClient, method: str, path: str, bad: Any) -> None:
    acme = tenant(client, "acme")
    headers = admin() if path.startswith(("/v1/organizations", "/v1/status")) else acme
    if bad is None:  # no body: a path parameter of the wrong type, or a bad query value
        target = path.replace("{organization_id}", "has spaces").replace("{integration_id}", "abc")
        target = target.replace("{delivery_id}", "abc")
        target = target.replace("{key_id}", "abc").replace("{job_id}", "abc")
        target = target.replace("{backfill_id}", "abc").replace("{action}", "pause")
        if "{" not in path:
            target += "?limit=0" if path == "/v1/deliveries" else ""
        response = client.request(method.upper(), target, headers=headers)
        if "{" not in path and path != "/v1/deliveries":
            assert response.status_code in (200, 201, 204)  # nothing to get wrong: it succeeds
            return
    else:
        integration = make_integration(client, acme)
        target = _concrete(path, {"integration_id": integration["id"], "organization_id": "acme"})
        response = client.request(method.upper(), target, json=bad, headers=headers)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert isinstance(errors, list) and all(error["loc"] and error["detail"] for error in errors)


def test_admin_routes_succeed(client: TestClient) -> None:
    make_integration(client, tenant(client, "acme"))
    status = client.get("/v1/status", headers=admin()).json()
    assert status["slot"] is None and status["consumer_group"] is None  # no [source], no [kafka] here
    assert [row["organization_id"] for row in status["integrations"]] == ["acme"]
    assert status["delivery_log"]["attempt_partitions"] == 2  # the two default partitions
    assert client.get("/v1/organizations/acme", headers=admin()).json()["id"] == "acme"
    assert [org["id"] for org in client.get("/v1/organizations", headers=admin()).json()] == ["acme"]
    assert client.delete("/v1/organizations/acme", headers=admin()).status_code == 204
    assert client.get("/v1/organizations/acme", headers=admin()).status_code == 404


def test_subscriptions_name_the_configured_entity_keys(client: TestClient) -> None:
    acme = tenant(client, "acme")
    typo = client.post("/v1/integrations", json={"url": "http://127.0.0.1:9/hook", "events": ["dosc:*"]},
                       headers=acme)
    assert typo.status_code == 422 and "unknown entity key 'dosc'" in typo.text and "known keys: docs" in typo.text
    assert make_integration(client, acme, events=["do*:created", "*"])["events"] == ["do*:created", "*"]
    integration = make_integration(client, acme)
    patched = client.patch(f"/v1/integrations/{integration['id']}", json={"events": ["nope:*"]}, headers=acme)
    assert patched.status_code == 422 and "known keys: docs" in patched.text
    huge = client.post("/v1/integrations", json={"url": "http://127.0.0.1:9/hook", "events": ["d" * 1_000]},
                       headers=acme)
    assert huge.status_code == 422 and "longer than 256 characters" in huge.text


def test_rate_limits_have_a_floor_and_concurrency_a_range(client: TestClient) -> None:
    acme = tenant(client, "acme")
    for bad in ({"rate_limit": 0.0001}, {"concurrency": 0}, {"concurrency": 1000}):
        response = client.post("/v1/integrations", json={"url": "http://127.0.0.1:9/h", "events": ["docs"], **bad},
                               headers=acme)
        assert response.status_code == 422, bad
    made = make_integration(client, acme, rate_limit=0.1, concurrency=3)
    assert (made["rate_limit"], made["concurrency"]) == (0.1, 3)


def test_an_organization_has_at_most_the_configured_number_of_integrations(database: str) -> None:
    settings = Settings(store={"dsn": database, "plaintext_secrets": True},
                        api={"admin_token": ADMIN, "max_integrations_per_organization": 2},
                        publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[DOCS])
    with TestClient(create_app(settings)) as capped:
        acme, globex = tenant(capped, "acme"), tenant(capped, "globex")
        make_integration(capped, acme)
        make_integration(capped, acme)
        third = capped.post("/v1/integrations", json={"url": "http://127.0.0.1:9/h", "events": ["docs"]}, headers=acme)
        assert third.status_code == 409 and "max_integrations_per_organization" in third.text
        make_integration(capped, globex)  # the cap is per organization
