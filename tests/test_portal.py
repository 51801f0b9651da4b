"""The portal's pages and fragments through the ASGI test client, on a real store."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from control.api.app import create_app
from control.portal.render import HTMX_VERSION
from control.portal.routes import STATIC
from models.settings import Settings
from tests.portal_support import (
    ADMIN,
    DOCS,
    admin_headers,
    csrf_of,
    form_token,
    open_link,
    organization,
    portal_link,
    signed_in,
)
from tests.receivers import ScriptedReceiver


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    settings = Settings(store={"dsn": database, "plaintext_secrets": True}, api={"admin_token": ADMIN},
                        publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[DOCS],
                        portal={"title": "Acme hooks", "accent_color": "#aa3300",
                                "frame_ancestors": ["https://app.example.com"]})
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _integration_form(csrf: str, **fields: str | list[str]) -> dict[str, str | list[str]]:
    return {"csrf": csrf, "url": "http://127.0.0.1:9/hook", "events": ["docs:created", "docs:updated"],
            "batch_size": "1", "ordering": "entity", **fields}


def test_a_link_signs_in_once_and_lands_on_the_organization(client: TestClient) -> None:
    key = organization(client, "acme")
    path = portal_link(client, key)
    assert client.get("/portal/o/acme/integrations", follow_redirects=False).headers["location"] == "/portal/login"
    opened = open_link(client, path)
    assert opened.status_code == 303 and opened.headers["location"] == "/portal/o/acme/integrations"
    cookie = opened.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Secure" not in cookie
    assert "Acme hooks" in client.get("/portal/o/acme/integrations").text
    again = open_link(client, path)
    assert again.status_code == 403 and "already used" in again.text


def test_a_link_posted_from_elsewhere_is_refused(client: TestClient) -> None:
    path = portal_link(client, organization(client, "acme"))
    assert client.post(path, data={"form_token": "forged"}).status_code == 403
    assert open_link(client, path).status_code == 303  # the refused post did not spend it


def test_expired_forged_and_revoked_links_are_refused(client: TestClient) -> None:
    key = organization(client, "acme")
    path = portal_link(client, key)
    forged = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert "not valid" in open_link(client, forged).text
    assert client.post("/v1/portal-links", json={"expiry_hours": 25}, headers=key).status_code == 422
    kept = portal_link(client, key, session_id="user-7")
    signed_in(client, key, "acme", session_id="user-7")
    revoked = client.post("/v1/portal-links/revoke", json={"session_id": "user-7"}, headers=key).json()
    assert revoked == {"links": 1, "sessions": 1}
    assert client.get("/portal/o/acme/integrations", follow_redirects=False).status_code == 303  # signed out
    assert "already used, revoked" in open_link(client, kept).text


def test_pages_carry_a_csp_without_inline_script(client: TestClient) -> None:
    signed_in(client, organization(client, "acme"), "acme")
    for path in ("/portal/o/acme/integrations", "/portal/o/acme/integrations/new", "/portal/o/acme/jobs",
                 "/portal/o/acme/catalogue", "/portal/login"):
        response = client.get(path)
        assert response.status_code == 200, path
        csp = response.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors https://app.example.com" in csp
        assert not re.search(r"<script(?![^>]*\bsrc=)", response.text), path  # every script is a file
        assert " style=" not in response.text and "<style" not in response.text
        assert "http://" not in response.text.replace("http://127.0.0.1:9", "").replace("http://testserver", "")


def test_htmx_is_vendored_at_its_pinned_version(client: TestClient) -> None:
    text = (STATIC / "htmx.min.js").read_text()
    assert text.startswith(f"/*! htmx {HTMX_VERSION} ") and "Zero-Clause BSD" in text.split("*/", 1)[0]
    served = client.get(f"/portal/static/htmx.min.js?v={HTMX_VERSION}")
    assert served.status_code == 200 and "htmx" in served.text
    assert client.get("/portal/theme.css").text.strip() == ":root { --accent: #aa3300; }"


def test_add_an_integration_with_ticked_events_and_a_secret(client: TestClient) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    secret = "whsec_" + "A" * 43 + "="
    saved = client.post("/portal/o/acme/integrations", data=_integration_form(csrf, secret=secret, name="CRM"),
                        follow_redirects=False)
    assert saved.status_code == 303, saved.text
    integration = client.get("/v1/integrations", headers=key).json()[0]
    assert integration["events"] == ["docs:created,updated"] and integration["name"] == "CRM"
    assert client.get(f"/v1/integrations/{integration['id']}/secret", headers=key).json()["secrets"] == [secret]
    page = client.get(saved.headers["location"]).text
    assert secret not in page  # secrets are shown on reveal only
    assert '"events": [\n    "docs:created,updated"' in page.replace("&#34;", '"')  # the RAW JSON
    assert 'value="docs:created" aria-label="docs created" checked' in page
    assert 'value="docs:deleted" aria-label="docs deleted">' in page


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"url": "ftp://example.com/x"}, "url", "must start with http:// or https://"),
    ({"url": "http://10.0.0.7/hook"}, "url", "private address"),
    ({"events": []}, "events", "at least 1 item"),
    ({"batch_size": "2000"}, "batch_size", "less than or equal to 1000"),
    ({"headers": "webhook-id: x"}, "headers", "is reserved"),
    ({"secret": "whsec_%%%"}, "secret", "not valid base64"),
])
def test_validation_errors_appear_next_to_their_field(client: TestClient, fields: dict[str, str], field: str,
                                                      words: str) -> None:
    csrf = signed_in(client, organization(client, "acme"), "acme")
    response = client.post("/portal/o/acme/integrations", data=_integration_form(csrf, **fields))
    assert response.status_code == 422
    found = re.search(rf'<p class="error" id="{field}-error" role="alert">([^<]*)</p>', response.text)
    assert found and words in found.group(1).replace("&#39;", "'"), response.text[-3000:]


def test_every_form_needs_the_csrf_token(client: TestClient) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    form = _integration_form("wrong")
    assert client.post("/portal/o/acme/integrations", data=form).status_code == 403
    assert client.post("/portal/o/acme/integrations", data={**form, "csrf": csrf},
                       follow_redirects=False).status_code == 303
    integration_id = client.get("/v1/integrations", headers=key).json()[0]["id"]
    fragment = client.post(f"/portal/o/acme/integrations/{integration_id}/secret/reveal", data={"confirm": "yes"},
                           headers={"hx-request": "true"})
    assert fragment.status_code == 403 and "CSRF" in fragment.text and "whsec_" not in fragment.text


def test_secrets_reveal_behind_a_confirmation_and_rotate_with_an_overlap(client: TestClient) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    client.post("/portal/o/acme/integrations", data=_integration_form(csrf))
    integration_id = client.get("/v1/integrations", headers=key).json()[0]["id"]
    base = f"/portal/o/acme/integrations/{integration_id}"
    headers = {"x-csrf-token": csrf, "hx-request": "true"}
    assert client.post(f"{base}/secret/reveal", headers=headers).status_code == 422
    revealed = client.post(f"{base}/secret/reveal", data={"confirm": "yes"}, headers=headers)
    old = client.get(f"/v1/integrations/{integration_id}/secret", headers=key).json()["secrets"][0]
    assert revealed.status_code == 200 and old in revealed.text and "<html" not in revealed.text
    rotated = client.post(f"{base}/secret/rotate", data={"overlap_hours": "2"}, headers=headers)
    active = client.get(f"/v1/integrations/{integration_id}/secret", headers=key).json()["secrets"]
    assert len(active) == 2 and active[1] == old  # the old one keeps signing through the overlap...
    assert active[0] in rotated.text and old not in rotated.text  # ...and only the new one is shown
    assert rotated.text.count("when rotated") == 1 and rotated.text.count(" UTC</td></tr>") == 1  # the old one's end


def test_a_view_only_link_cannot_change_anything(client: TestClient) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme", capabilities=["view"])
    assert "Add integration" not in client.get("/portal/o/acme/integrations").text
    response = client.post("/portal/o/acme/integrations", data=_integration_form(csrf))
    assert response.status_code == 403 and "manage_integrations" in response.text
    assert client.get("/v1/integrations", headers=key).json() == []


def test_the_operator_signs_in_with_the_admin_token_and_makes_links(client: TestClient) -> None:
    organization(client, "acme")
    page = client.get("/portal/login")
    refused = client.post("/portal/login", data={"token": "wrong" * 6, "form_token": form_token(page.text)})
    assert refused.status_code == 401 and "not the admin token" in refused.text
    signed = client.post("/portal/login", data={"token": ADMIN, "form_token": form_token(page.text)},
                         follow_redirects=False)
    assert signed.headers["location"] == "/portal/orgs"
    orgs = client.get("/portal/orgs").text
    assert "/portal/o/acme/integrations" in orgs
    csrf = csrf_of(orgs)
    made = client.post("/portal/orgs/acme/links", data={"capabilities": ["recover"], "expiry_hours": "2"},
                       headers={"x-csrf-token": csrf, "hx-request": "true"})
    link = re.search(r'value="http://testserver(/portal/link/[^"]+)"', made.text)
    assert made.status_code == 200 and link, made.text
    assert client.get("/portal/o/acme/integrations").status_code == 200  # the operator sees every organization
    assert client.get("/portal/o/nobody/integrations").status_code == 404
    client.cookies.clear()
    assert open_link(client, link.group(1)).headers["location"] == "/portal/o/acme/integrations"
    assert client.get("/portal/orgs").status_code == 404  # an organization's session is no operator


def test_the_admin_api_makes_links_for_any_organization(client: TestClient) -> None:
    organization(client, "acme")
    made = client.post("/v1/organizations/acme/portal-links", json={"expiry_hours": 0.5}, headers=admin_headers())
    assert made.status_code == 201 and made.json()["capabilities"] == ["view"]
    assert client.post("/v1/organizations/nobody/portal-links", json={}, headers=admin_headers()).status_code == 404
    assert client.post("/v1/organizations/acme/portal-links", json={}).status_code == 401


def test_the_session_cookie_is_secure_over_tls(client: TestClient) -> None:
    path = portal_link(client, organization(client, "acme"))
    client.base_url = "https://testserver"  # type: ignore[assignment]
    opened = open_link(client, path)
    assert opened.status_code == 303 and "Secure" in opened.headers["set-cookie"]


def test_the_raw_json_follows_the_form(client: TestClient) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    headers = {"x-csrf-token": csrf, "hx-request": "true"}
    new = client.post("/portal/o/acme/integrations/preview", data=_integration_form(csrf, name="CRM"), headers=headers)
    assert new.json() == {"id": None, "name": "CRM", "url": "http://127.0.0.1:9/hook",
                          "events": ["docs:created,updated"], "enabled": True, "disabled_reason": None,
                          "environment": None, "ordering": "entity", "batch_size": 1, "rate_limit": None,
                          "concurrency": None, "headers": {}, "send_traceparent": False,
                          "catching_up": False}
    wrong = client.post("/portal/o/acme/integrations/preview", data=_integration_form(csrf, batch_size="0"),
                        headers=headers)
    assert list(wrong.json()["errors"]) == ["batch_size"]
    client.post("/portal/o/acme/integrations", data=_integration_form(csrf))
    saved = client.get("/v1/integrations", headers=key).json()[0]
    edited = client.post("/portal/o/acme/integrations/preview", headers=headers, data={
        **_integration_form(csrf, events=["docs:deleted"]), "integration_id": str(saved["id"])}).json()
    assert edited["id"] == saved["id"] and edited["events"] == ["docs:deleted"]
    assert client.get(f"/v1/integrations/{saved['id']}", headers=key).json()["events"] == saved["events"]  # not saved


def test_signing_out_of_an_organization_says_to_ask_for_a_new_link(client: TestClient) -> None:
    """An organization's user who signed out landed on the operator's admin-token sign-in page."""
    csrf = signed_in(client, organization(client, "acme"), "acme")
    out = client.post("/portal/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 200 and "signed out of <strong>acme</strong>" in out.text and "new one" in out.text
    assert "Admin token" not in out.text and 'walhook_portal=""' in out.headers["set-cookie"]
    assert client.get("/portal/o/acme/integrations", follow_redirects=False).headers["location"] == "/portal/login"
    page = client.get("/portal/login")
    client.post("/portal/login", data={"token": ADMIN, "form_token": form_token(page.text)})
    operator = client.post("/portal/logout", data={"csrf": csrf_of(client.get("/portal/orgs").text)},
                           follow_redirects=False)
    assert operator.status_code == 303 and operator.headers["location"] == "/portal/login"


async def test_a_sample_is_signed_with_real_secrets_only_for_a_session_that_may_use_them(
        client: TestClient) -> None:
    """"Send sample" (manage_integrations) signed values the user picks with the real secrets: a session
    without 'secrets' now signs with a throwaway secret, said so; one with it signs with the real one."""
    key = organization(client, "acme")
    async with ScriptedReceiver() as receiver:
        made = client.post("/v1/integrations", json={"url": receiver.url("hook"), "events": ["docs:*"]}, headers=key)
        integration_id = made.json()["id"]
        receiver.secrets["hook"] = client.get(f"/v1/integrations/{integration_id}/secret",
                                              headers=key).json()["secrets"][0]
        sample = {"entity_key": "docs", "operation": "created", "as_if_new": "title=forged"}
        path = f"/portal/o/acme/integrations/{integration_id}/sample"
        for capabilities, verifies in ((["manage_integrations"], False), (["manage_integrations", "secrets"], True)):
            csrf = signed_in(client, key, "acme", capabilities=capabilities)
            shown = await asyncio.to_thread(client.post, path, data=sample,
                                            headers={"x-csrf-token": csrf, "hx-request": "true"})
            assert shown.status_code == 200, shown.text
            assert ("throwaway secret made for this sample" in shown.text) is not verifies, capabilities
            assert (receiver.hits[-1].event is not None) is verifies, capabilities
    assert len(receiver.hits) == 2


async def test_the_add_page_sends_a_sample_to_the_url_typed_before_the_first_save(client: TestClient) -> None:
    """A sample needed a saved integration; the Add page's goes to the URL typed, signed with the secret typed
    (a session with 'secrets'), or a throwaway one (without), and saves nothing."""
    key = organization(client, "acme")
    typed = "whsec_" + "C" * 43 + "="
    signed_in(client, key, "acme")
    add_page = client.get("/portal/o/acme/integrations/new").text
    assert 'hx-post="/portal/o/acme/integrations/sample" hx-include="#integration-form"' in add_page
    async with ScriptedReceiver(secrets={"new": typed}) as receiver:
        for capabilities, verifies in ((["manage_integrations", "secrets"], True), (["manage_integrations"], False)):
            csrf = signed_in(client, key, "acme", capabilities=capabilities)
            form = {**_integration_form(csrf, url=receiver.url("new"), secret=typed * verifies),
                    "entity_key": "docs", "operation": "updated"}
            shown = await asyncio.to_thread(client.post, "/portal/o/acme/integrations/sample", data=form,
                                            headers={"x-csrf-token": csrf, "hx-request": "true"})
            assert shown.status_code == 200 and "matched: the integration would have received" in shown.text
            assert (receiver.hits[-1].event is not None) is verifies and receiver.hits[-1].webhook_id.startswith(
                "sample_updated_0_")
        incomplete = client.post("/portal/o/acme/integrations/sample", headers={"x-csrf-token": csrf},
                                 data={**_integration_form(csrf, events=[]), "entity_key": "docs"})
        assert incomplete.status_code == 422 and "fill in the form first: events:" in incomplete.text
    assert len(receiver.hits) == 2 and client.get("/v1/integrations", headers=key).json() == []


def test_one_box_subscribes_to_every_operational_event(client: TestClient) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    form = {**_integration_form(csrf), "events": ["docs:created", "walhook/operational:*"]}
    saved = client.post("/portal/o/acme/integrations", data=form, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    (integration,) = client.get("/v1/integrations", headers=key).json()
    assert integration["events"] == ["docs:created", "walhook/operational:*"]
    page = client.get(saved.headers["location"]).text
    assert re.search(r'value="walhook/operational:\*" checked', page), "the box shows what was saved"
    assert "walhook/operational" not in re.search(r'<textarea id="other"[^>]*>([^<]*)<', page).group(1)  # type: ignore[union-attr]
