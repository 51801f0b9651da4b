"""Security review 2's findings that live in the control plane, each held by a test that failed before its fix."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from starlette.testclient import TestClient

from control.actor import ALL_CAPABILITIES
from control.api.app import create_app
from control.api.failures import AuthFailures
from control.portal import links
from control.portal.links import LinkGrant
from models.secretbox import Keyring, new_key
from models.settings import Settings
from publisher.store import NewDelivery, Store
from tests.portal_support import ADMIN, DOCS, admin_headers, open_link, organization, portal_link
from walhook.cli.status import render, render_organization

KEY = new_key("k1")


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    settings = Settings(store={"dsn": database, "secret_keys": [KEY]}, api={"admin_token": ADMIN},
                        publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[DOCS])
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_a_dump_of_the_store_cannot_forge_a_portal_session(client: TestClient, database: str) -> None:
    """M7: the link-signing key is in no row, and a session gets the capabilities stored with its link."""
    key = organization(client, "acme")
    assert client.post("/v1/portal-links", json={"capabilities": []}, headers=key).status_code == 201  # view only
    with psycopg.connect(database) as conn:  # what a pg_dump holds
        kept_keys = conn.execute("SELECT key FROM walhook.portal_signing_keys").fetchall()
        link_id, expires_at = conn.execute("SELECT id, expires_at FROM walhook.portal_links").fetchone()  # type: ignore[misc]
    assert kept_keys == []
    # Even with the real signing key (leaked some other way), the token's claims grant nothing more.
    real_key = Keyring([KEY]).derive("portal link signing")
    forged = links.sign(LinkGrant(link_id, "acme", frozenset(ALL_CAPABILITIES), expires_at), real_key)
    assert open_link(client, f"/portal/link/{forged}").status_code == 303
    with psycopg.connect(database) as conn:
        (capabilities,) = conn.execute("SELECT capabilities FROM walhook.portal_sessions").fetchone()  # type: ignore[misc]
    assert capabilities == ["view"]
    assert client.get("/portal/o/acme/settings/secret").status_code in (403, 404)


@pytest.fixture
def backfill_client(database: str) -> Iterator[TestClient]:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, org text, title text, secret_note text)")
    settings = Settings(store={"dsn": database, "plaintext_secrets": True}, source={"dsn": database},
                        api={"admin_token": ADMIN}, publisher={"allowed_networks": ["127.0.0.1/32"]},
                        entities=[{**DOCS, "exclude_columns": ["secret_note"]}])
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_a_backfill_filter_cannot_read_an_excluded_column(backfill_client: TestClient) -> None:
    """M4: a filter on an excluded column is refused as one on a missing column is, and no error names it."""
    key = organization(backfill_client, "acme")
    answers = {column: backfill_client.post("/v1/backfills", json={"entity_key": "docs",
                                                                    "filter": f"{column} = 'x'"}, headers=key)
               for column in ("secret_note", "no_such_column")}
    assert {column: answer.status_code for column, answer in answers.items()} == {
        "secret_note": 422, "no_such_column": 422}
    excluded, missing = (answers[c].json()["detail"] for c in ("secret_note", "no_such_column"))
    assert excluded.replace("secret_note", "no_such_column") == missing  # the same words: no oracle
    other = backfill_client.post("/v1/backfills", json={"entity_key": "docs", "filter": "nope = 1"}, headers=key)
    assert "secret_note" not in other.json()["detail"] and "title" in other.json()["detail"]
    assert backfill_client.get("/v1/backfills", headers=key).json() == []


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", '"\\ud800"', '{"a": "\\udfff"}'])
def test_an_unrepresentable_condition_value_is_a_422_not_a_500(client: TestClient, value: str) -> None:
    """L1: rendering the refusal of such a value failed, and the client saw a 500."""
    key = organization(client, "acme")
    body = ('{"url": "http://127.0.0.1:9/hook", "events": [{"subscription": "docs:*", '
            f'"when": {{"property": "title", "equals": {value}}}}}]}}')
    answer = client.post("/v1/integrations", content=body.encode(), headers={**key, "content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert "when" in answer.text or "equals" in answer.text or "value" in answer.text


def test_answers_carrying_secrets_are_never_cached(client: TestClient) -> None:
    """L4: an organization's secret, an API key and a revealed secret are answered with no-store."""
    created = client.post("/v1/organizations", json={"id": "acme"}, headers=admin_headers())
    key = client.post("/v1/organizations/acme/keys", json={"name": "k"}, headers=admin_headers())
    revealed = client.post("/v1/secret/rotate", json={}, headers={"authorization": f"Bearer {key.json()['key']}"})
    for answer in (created, key, revealed):
        assert answer.status_code in (200, 201), answer.text
        assert answer.headers["cache-control"] == "no-store"


def test_portal_cookies_carry_the_host_prefix_over_tls(database: str) -> None:
    """L4: over TLS the session cookie is ``__Host-`` (Secure, Path=/), so no other path or host sets it."""
    settings = Settings(store={"dsn": database, "secret_keys": [KEY]}, api={"admin_token": ADMIN},
                        publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[DOCS])
    with TestClient(create_app(settings), base_url="https://testserver") as tls:
        key = organization(tls, "acme")
        link = tls.post("/v1/portal-links", json={"capabilities": []}, headers=key).json()["url"]
        opened = open_link(tls, link.removeprefix("https://testserver"))
        assert opened.status_code == 303, opened.text
        cookie = opened.headers["set-cookie"]
        assert cookie.startswith("__Host-walhook_portal=") and "Secure" in cookie and "Path=/;" in cookie
        assert tls.get("/portal/o/acme/integrations").status_code == 200  # the prefixed cookie signs in


def test_failed_authentications_are_limited_per_source_address() -> None:
    failures = AuthFailures(limit=3, window=60.0, max_sources=2)
    for second in range(3):
        assert failures.wait_for("198.51.100.7", second) == 0
        failures.failed("198.51.100.7", second)
    assert failures.wait_for("198.51.100.7", 10.0) == 50.0  # until the oldest failure is a minute old
    assert failures.wait_for("203.0.113.9", 10.0) == 0  # another address is not held back
    assert failures.wait_for("198.51.100.7", 60.0) == 0
    failures.failed("203.0.113.9", 61.0)
    failures.failed("192.0.2.1", 62.0)  # a third source: the least recent one is forgotten
    assert failures.wait_for("198.51.100.7", 62.0) == 0


def test_guessing_keys_or_the_admin_token_gets_429_and_is_logged(
        database: str, caplog: pytest.LogCaptureFixture) -> None:
    """L2: 300 wrong API keys once took 10.8 s, all answered 401."""
    settings = Settings(store={"dsn": database, "plaintext_secrets": True},
                        api={"admin_token": ADMIN, "auth_failures_per_minute": 5},
                        publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[DOCS])
    app = create_app(settings)
    with TestClient(app, client=("198.51.100.7", 4000)) as attacker, \
            TestClient(app, client=("203.0.113.9", 4000)) as neighbour:
        key = organization(neighbour, "acme")
        statuses = [attacker.get("/v1/integrations", headers={"authorization": f"Bearer whk_guess{n}"}).status_code
                    for n in range(8)]
        assert statuses == [401] * 5 + [429] * 3
        refused = attacker.get("/v1/organizations", headers=admin_headers())  # right token, still waiting
        assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 60
        assert neighbour.get("/v1/integrations", headers=key).status_code == 200
        page = attacker.get("/portal/login")
        token = re.search(r'name="form_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        login = attacker.post("/portal/login", data={"token": ADMIN, "form_token": token})
        assert login.status_code == 429 and "too many failed sign-ins" in login.text
    assert "failed authentication (API key) from 198.51.100.7 on GET /v1/integrations" in caplog.text


async def test_custom_headers_are_sealed_at_rest_and_resealed(database: str) -> None:
    """L3: custom header values (often a receiver's credentials) were kept in clear."""
    async with Store(database, keyring=Keyring([KEY])) as store:
        await store.add_organization("acme")
        made = await store.add_integration("acme", "http://127.0.0.1:9/hook", ["docs:*"],
                                           headers={"x-api-key": "receiver-password"})
        other = await store.add_integration("acme", "http://127.0.0.1:9/other", ["docs:*"])
        await store.update_integration("acme", other, {"headers": {"authorization": "Bearer hunter2"}})
        assert (await store.integration(made)).headers == {"x-api-key": "receiver-password"}
        assert (await store.integration(other)).headers == {"authorization": "Bearer hunter2"}
    with psycopg.connect(database) as conn:
        dump = str(conn.execute("SELECT headers FROM walhook.integrations").fetchall())
    assert "receiver-password" not in dump and "hunter2" not in dump and "(sealed)" in dump
    second = new_key("k2")
    async with Store(database, keyring=Keyring([second, KEY])) as store:
        await store.reseal_secrets()
    async with Store(database, keyring=Keyring([second])) as store:  # the old key is gone: still readable
        assert (await store.integration(made)).headers == {"x-api-key": "receiver-password"}


def test_a_view_only_session_sees_header_names_not_values(client: TestClient) -> None:
    """L3: a view-only portal session was shown custom header values."""
    key = organization(client, "acme")
    made = client.post("/v1/integrations", json={"url": "http://127.0.0.1:9/hook", "events": ["docs:*"],
                                                 "headers": {"x-api-key": "receiver-password"}}, headers=key)
    page = f"/portal/o/acme/integrations/{made.json()['id']}"
    open_link(client, portal_link(client, key, capabilities=[]))
    viewed = client.get(page).text
    assert "x-api-key: (hidden)" in viewed and "receiver-password" not in viewed
    open_link(client, portal_link(client, key, capabilities=["manage_integrations"]))
    assert "x-api-key: receiver-password" in client.get(page).text


@pytest.fixture
def limited(database: str) -> Iterator[TestClient]:
    settings = Settings(store={"dsn": database, "plaintext_secrets": True},
                        api={"admin_token": ADMIN, "manual_actions_per_minute": 3, "log_mb_per_organization": 1},
                        publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[DOCS])
    with TestClient(create_app(settings)) as test_client:
        yield test_client


async def _deliveries(database: str, org: str, integration_id: int, count: int, size: int) -> list[int]:
    body = b'{"entityKey": "docs", "pad": "' + b"x" * size + b'"}'
    new = [NewDelivery(integration_id, org, f"evt_{org}_{n:04d}", f"evt_{org}_{n:04d}_i{integration_id}", "docs",
                       f"docs/{n}", "created", body) for n in range(count)]
    async with Store(database) as store:
        return [d.id for d in await store.create_deliveries(new, timedelta(seconds=1))]


async def test_manual_actions_are_rate_limited_per_organization(limited: TestClient, database: str) -> None:
    """M6: nothing limited redeliver, recover or replay: three replays wrote 31 MiB of log in 7 s."""
    acme, globex = organization(limited, "acme"), organization(limited, "globex")
    hooks = {org: limited.post("/v1/integrations", json={"url": "http://127.0.0.1:9/h", "events": ["docs:*"]},
                               headers=key).json()["id"] for org, key in (("acme", acme), ("globex", globex))}
    (mine,) = await _deliveries(database, "acme", hooks["acme"], 1, 10)
    (theirs,) = await _deliveries(database, "globex", hooks["globex"], 1, 10)
    answers = [limited.post(f"/v1/deliveries/{mine}/redeliver", headers=acme) for _ in range(3)]
    answers.append(limited.post(f"/v1/integrations/{hooks['acme']}/replay", json={"offset": 0}, headers=acme))
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert 0 < int(answers[-1].headers["retry-after"]) <= 60 and "manual_actions_per_minute" in answers[-1].text
    assert limited.post(f"/v1/deliveries/{theirs}/redeliver", headers=globex).status_code == 200  # not theirs
    assert limited.get("/v1/usage", headers=acme).json()["actions_last_minute"] == 3


async def test_the_delivery_log_has_a_quota_per_organization(limited: TestClient, database: str) -> None:
    """M6: past its log quota an organization's manual actions are refused, with when to retry; the portal
    and the API show how much of it is used."""
    acme = organization(limited, "acme")
    hook = limited.post("/v1/integrations", json={"url": "http://127.0.0.1:9/h", "events": ["docs:*"]},
                        headers=acme).json()["id"]
    ids = await _deliveries(database, "acme", hook, 3, 400_000)  # 1.2 MB of bodies in the last 24 hours
    refused = limited.post(f"/v1/deliveries/{ids[0]}/redeliver", headers=acme)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "3600"
    assert "log_mb_per_organization" in refused.json()["detail"]
    usage = limited.get("/v1/usage", headers=acme).json()
    assert usage["log_mb_24h"] >= 1.1 and usage["log_mb_quota"] == 1
    open_link(limited, portal_link(limited, acme))
    assert "of 1 MB" in limited.get("/portal/o/acme/jobs").text
    status = limited.get("/v1/status", headers=admin_headers()).json()  # the operator's status
    assert status["busiest_organizations"][0]["organization_id"] == "acme"
    assert any(line.strip().startswith("acme") and "MB" in line for line in render(status))


def test_the_portal_keeps_the_integration_cap_and_the_secrets_capability(database: str) -> None:
    """Two portal copies had drifted from the API: create ignored the cap (103 of 100), and a session
    without the secrets capability could set the signing secret through the edit form."""
    settings = Settings(store={"dsn": database, "plaintext_secrets": True},
                        api={"admin_token": ADMIN, "max_integrations_per_organization": 1},
                        publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[DOCS])
    with TestClient(create_app(settings)) as client:
        key = organization(client, "acme")
        open_link(client, portal_link(client, key, capabilities=["manage_integrations"]))
        csrf = re.search(r'"x-csrf-token": "([^"]+)"', client.get("/portal/o/acme/integrations").text).group(1)  # type: ignore[union-attr]
        form = {"url": "http://127.0.0.1:9/hook", "events": ["docs:created", "docs:updated"], "ordering": "entity",
                "batch_size": "1"}
        first = client.post("/portal/o/acme/integrations", data=form, headers={"x-csrf-token": csrf},
                            follow_redirects=False)
        assert first.status_code == 303, first.text
        second = client.post("/portal/o/acme/integrations", data=form, headers={"x-csrf-token": csrf})
        assert second.status_code == 409 and "max_integrations_per_organization" in second.text
        (made,) = client.get("/v1/integrations", headers=key).json()
        secret = "whsec_" + "A" * 32
        refused = client.post(f"/portal/o/acme/integrations/{made['id']}", data={**form, "secret": secret},
                              headers={"x-csrf-token": csrf})
        assert refused.status_code == 403 and "may not set signing secrets" in refused.text
        assert secret not in client.get(f"/v1/integrations/{made['id']}/secret", headers=key).text


def test_an_organizations_key_reads_its_own_status_only(client: TestClient, database: str) -> None:
    """``status`` with an organization's key answered 401; it now shows that organization's part only."""
    acme, globex = organization(client, "acme"), organization(client, "globex")
    for key in (acme, globex):
        assert client.post("/v1/integrations", json={"url": "http://127.0.0.1:9/h", "events": ["docs:*"]},
                           headers=key).status_code == 201
    mine = client.get("/v1/status", headers=acme).json()
    assert mine["organization"] == "acme" and [row["organization_id"] for row in mine["integrations"]] == ["acme"]
    assert "slot" not in mine and "busiest_organizations" not in mine and mine["usage"]["actions_per_minute"] == 30
    assert "manual actions: 0 of 30 in the last minute" in "\n".join(render_organization(mine))
    everything = client.get("/v1/status", headers=admin_headers()).json()
    assert {row["organization_id"] for row in everything["integrations"]} == {"acme", "globex"}
    assert client.get("/v1/status", headers={"authorization": "Bearer whk_nope"}).status_code == 401
