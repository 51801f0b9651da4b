"""Helpers for the portal's tests: an organization with a key, a portal link, a signed-in client."""

from __future__ import annotations

import re
from typing import Any

from starlette.testclient import TestClient

ADMIN = "admin-token-" + "p" * 20
DOCS = {"table": "public.docs", "entity_key": "docs", "entity_path": "docs/{id}", "collection_path": "docs",
        "organization_column": "org"}


def admin_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {ADMIN}"}


def organization(client: TestClient, org: str) -> dict[str, str]:
    """Create ``org`` through the API; its API key's headers."""
    assert client.post("/v1/organizations", json={"id": org}, headers=admin_headers()).status_code == 201
    key = client.post(f"/v1/organizations/{org}/keys", json={"name": "backend"}, headers=admin_headers()).json()
    return {"authorization": f"Bearer {key['key']}"}


def portal_link(client: TestClient, key: dict[str, str], **body: Any) -> str:
    """A portal link's path (``/portal/link/...``) made through ``POST /v1/portal-links``."""
    body.setdefault("capabilities", ["manage_integrations", "secrets", "recover"])
    response = client.post("/v1/portal-links", json=body, headers=key)
    assert response.status_code == 201, response.text
    return str(response.json()["url"]).removeprefix("http://testserver")


def form_token(html: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', html)
    assert found, "no form token in the page"
    return found.group(1)


def csrf_of(html: str) -> str:
    found = re.search(r'"x-csrf-token": "([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def open_link(client: TestClient, path: str) -> Any:
    """Open a portal link as a browser does: the page, then its button's POST."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    return client.post(path, data={"form_token": form_token(page.text)}, follow_redirects=False)


def signed_in(client: TestClient, key: dict[str, str], org: str, **body: Any) -> str:
    """Sign ``client`` in to ``org`` through a fresh link; the session's CSRF token."""
    opened = open_link(client, portal_link(client, key, **body))
    assert opened.status_code == 303 and opened.headers["location"] == f"/portal/o/{org}/integrations", opened.text
    return csrf_of(client.get(f"/portal/o/{org}/integrations").text)
