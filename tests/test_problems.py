"""API errors as RFC 9457 problem details, on a real store: the media type, the fields, each kind's
``type``, validation errors' field paths, ``Retry-After``, the OpenAPI document, and the portal kept
on its own pages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from starlette.testclient import TestClient

from control.api.app import create_app
from control.api.problems import KINDS, TYPE_BASE
from models.settings import Settings
from tests.portal_support import ADMIN, admin_headers, organization, signed_in

PROBLEM = "application/problem+json"
DOCS = {"table": "public.docs", "entity_key": "docs", "entity_path": "docs/{id}", "collection_path": "docs",
        "organization_column": "org"}
HOOK = {"url": "http://127.0.0.1:9/hook", "events": ["docs:*"]}


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    settings = Settings(store={"dsn": database, "plaintext_secrets": True},
                        api={"admin_token": ADMIN, "max_body_bytes": 4096,
                             "manual_actions_per_minute": 1},
                        publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[DOCS])
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def problem_of(response: Any, status: int) -> dict[str, Any]:
    """The problem ``response`` carries, checked against RFC 9457's members and the OpenAPI schema."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["type"]
    assert isinstance(body["detail"], str) and "\n" not in body["detail"] and body["detail"]
    return body


def test_walhooks_own_errors_have_a_type_a_title_and_todays_detail(client: TestClient) -> None:
    acme = organization(client, "acme")
    missing = problem_of(client.get("/v1/integrations/123456789", headers=acme), 404)
    assert missing["type"] == TYPE_BASE + "not-found" and missing["title"] == "Not found"
    assert missing["detail"] == "integration 123456789 does not exist"
    again = problem_of(client.post("/v1/organizations", json={"id": "acme"}, headers=admin_headers()), 409)
    assert again["type"] == TYPE_BASE + "conflict" and "acme" in again["detail"]
    private = client.post("/v1/integrations", json={**HOOK, "url": "http://10.0.0.7/hook"}, headers=acme)
    refused = problem_of(private, 422)
    assert refused["type"] == TYPE_BASE + "destination-refused" and refused["title"] == "Destination not allowed"
    assert refused["detail"].startswith("http://10.0.0.7/hook: destination not allowed (") and "errors" not in refused


def test_a_throttled_action_keeps_retry_after(client: TestClient) -> None:
    acme = organization(client, "acme")
    hook = client.post("/v1/integrations", json=HOOK, headers=acme).json()["id"]
    assert client.post(f"/v1/integrations/{hook}/replay", json={"offset": 0}, headers=acme).status_code == 202
    answer = client.post(f"/v1/integrations/{hook}/replay", json={"offset": 0}, headers=acme)
    throttled = problem_of(answer, 429)
    assert throttled["type"] == TYPE_BASE + "throttled" and "manual_actions_per_minute" in throttled["detail"]
    assert 0 < int(answer.headers["retry-after"]) <= 60


def test_a_validation_error_names_each_field_by_its_path(client: TestClient) -> None:
    acme = organization(client, "acme")
    body = {**HOOK, "url": "ftp://example.com/x", "headers": {"x-a/b": 5}, "colour": "red"}
    invalid = problem_of(client.post("/v1/integrations", json=body, headers=acme), 422)
    assert invalid["type"] == TYPE_BASE + "invalid-request" and invalid["title"] == "Invalid request"
    fields = {error["pointer"]: error for error in invalid["errors"]}
    assert set(fields) == {"#/url", "#/headers/x-a~1b", "#/colour"}, invalid  # "/" escaped as RFC 6901 says
    assert fields["#/url"]["loc"] == ["body", "url"] and fields["#/colour"]["type"] == "extra_forbidden"
    assert invalid["detail"] == ("headers.x-a/b: Input should be a valid string; url: Value error, the URL must "
                                 "start with http:// or https://; colour: Extra inputs are not permitted")
    query = problem_of(client.get("/v1/deliveries", params={"limit": 1000}, headers=acme), 422)
    (limit,) = query["errors"]
    assert limit["loc"] == ["query", "limit"] and "pointer" not in limit
    assert query["detail"] == "query.limit: Input should be less than or equal to 500"
    broken = client.post("/v1/integrations", content=b'{"url": ', headers={**acme, "content-type": "application/json"})
    not_json = problem_of(broken, 422)
    assert not_json["detail"] == "body: JSON decode error" and "pointer" not in not_json["errors"][0]


def test_plain_http_refusals_are_about_blank(client: TestClient) -> None:
    """401, an unknown route, a wrong method and a body over the limit: the status says it all."""
    anonymous = client.get("/v1/integrations")
    assert problem_of(anonymous, 401)["detail"] == "missing or invalid credentials"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    acme = organization(client, "acme")
    answers = {404: client.get("/v1/nothing-here", headers=acme), 405: client.put("/v1/keys", headers=acme),
               413: client.post("/v1/integrations", content=b"{" + b" " * 5000 + b"}", headers=acme)}
    for status, answer in answers.items():
        assert problem_of(answer, status)["type"] == "about:blank"
        assert answer.json()["title"] == HTTPStatus(status).phrase
    assert answers[413].json()["detail"] == "request body over 4096 bytes (the API's max_body_bytes)"
    assert "GET" in answers[405].headers["allow"]


def test_openapi_documents_the_problem_for_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operations = [(path, method, operation) for path, item in spec["paths"].items()
                  for method, operation in item.items()]
    assert len(operations) >= 25
    for path, method, operation in operations:
        for statuses in ("4XX", "5XX"):
            content = operation["responses"][statuses]["content"]
            assert content == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}, (path, method)
        assert "422" not in operation["responses"], (path, method)  # FastAPI's own shape is not answered
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    # What the API answers is what it documents.
    validator = Draft202012Validator({"$ref": "#/components/schemas/Problem", "components": spec["components"]})
    acme = organization(client, "acme")
    for answer in (client.post("/v1/integrations", json={"url": "ftp://x", "colour": 1}, headers=acme),
                   client.get("/v1/integrations/123456789", headers=acme), client.get("/v1/integrations")):
        assert not list(validator.iter_errors(answer.json())), answer.text


def test_each_kind_has_its_own_type_and_is_documented() -> None:
    """One row per error class; each ``type`` is unique and the API reference describes it."""
    reference = (Path(__file__).parents[1] / "docs" / "reference" / "api.md").read_text()
    slugs = [kind.slug for _, kind in KINDS] + ["throttled", "invalid-request"]
    assert len(set(slugs)) == len(slugs)
    for slug in slugs:
        assert re.search(rf"^\| `{slug}` \|", reference, re.MULTILINE), f"{slug} is not in the API reference"


def test_the_portal_keeps_its_own_pages(client: TestClient) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    page = client.get("/portal/o/acme/integrations/123456789", headers={"x-csrf-token": csrf})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "integration 123456789 does not exist" in page.text
