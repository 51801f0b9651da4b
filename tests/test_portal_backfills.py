"""The portal's backfills screen and the ``read`` box of the subscription editor, on a real store."""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Iterator
from datetime import timedelta

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient

from control.api.app import create_app
from control.portal.forms import events_from_ticks, ticks_from_events
from models.settings import Settings
from publisher.store import Store
from tests.portal_support import ADMIN, DOCS, organization, signed_in

HTMX = {"hx-request": "true"}


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, org text, title text)")
        conn.execute("CREATE TABLE keyless (id int, org text)")
    keyless = {**DOCS, "table": "public.keyless", "entity_key": "keyless", "entity_path": "keyless/{id}"}
    settings = Settings(store={"dsn": database, "plaintext_secrets": True}, source={"dsn": database},
                        api={"admin_token": ADMIN}, publisher={"allowed_networks": ["127.0.0.1/32"]},
                        entities=[DOCS, keyless])
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _integration(client: TestClient, key: dict[str, str], name: str = "CRM", events: str = "docs:*") -> int:
    made = client.post("/v1/integrations", json={"url": "http://127.0.0.1:9/hook", "events": [events],
                                                 "name": name}, headers=key)
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def _start(client: TestClient, org: str, csrf: str, **fields: str) -> httpx.Response:
    return client.post(f"/portal/o/{org}/backfills", data={"csrf": csrf, "entity_key": "docs", "target": "all",
                                                           "filter": "", **fields}, follow_redirects=False)


def _form_error(page: str) -> str:
    found = re.search(r'<p class="error" id="backfill-error" role="alert">([^<]*)</p>', page)
    assert found, page[-2000:]
    return html.unescape(found.group(1))


def test_read_is_a_box_of_its_own_beside_the_three_changes() -> None:
    assert events_from_ticks(["docs:created", "docs:updated", "docs:deleted"], "") == ["docs:*"]
    assert events_from_ticks(["docs:created", "docs:deleted", "docs:read", "docs:updated"], "") == ["docs:*,read"]
    assert events_from_ticks(["docs:read"], "flows/*:*") == ["docs:read", "flows/*:*"]
    assert events_from_ticks(["docs:read", "docs:updated"], "") == ["docs:updated,read"]
    assert ticks_from_events(["docs:*"], ["docs"]) == ({"docs:created", "docs:updated", "docs:deleted"}, [])
    assert ticks_from_events(["docs:read", "other:*,read"], ["docs"]) == ({"docs:read"}, ["other:*,read"])


def test_the_editor_subscribes_to_read_and_shows_it_ticked(client: TestClient) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    integration_id = _integration(client, key)
    page = client.get(f"/portal/o/acme/integrations/{integration_id}").text
    assert 'value="docs:read" data-not-in-all aria-label="docs read (backfill rows)">' in page  # docs:* leaves it
    saved = client.post(f"/portal/o/acme/integrations/{integration_id}", follow_redirects=False, data={
        "csrf": csrf, "url": "http://127.0.0.1:9/hook", "batch_size": "1", "ordering": "entity",
        "events": ["docs:created", "docs:updated", "docs:deleted", "docs:read", "keyless:read"]})
    assert saved.status_code == 303, saved.text
    assert client.get(f"/v1/integrations/{integration_id}", headers=key).json()["events"] == [
        "docs:*,read", "keyless:read"]
    page = client.get(f"/portal/o/acme/integrations/{integration_id}").text
    assert 'value="docs:read" data-not-in-all aria-label="docs read (backfill rows)" checked' in page
    assert 'value="docs:created" aria-label="docs created" checked' in page
    assert 'value="keyless:updated" aria-label="keyless updated">' in page
    assert f'href="/portal/o/acme/backfills?integration_id={integration_id}"' in page  # the shortcut


async def test_a_backfill_started_from_the_form_is_followed_until_done(client: TestClient, database: str) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    integration_id = _integration(client, key, "New endpoint")
    form = client.get(f"/portal/o/acme/backfills?integration_id={integration_id}").text
    assert f'<option value="{integration_id}" selected>only integration {integration_id} · New endpoint' in form
    assert 'aria-current="page">Backfills</a>' in form and "No backfills yet." in form
    started = _start(client, "acme", csrf, target=str(integration_id), filter="title IS NOT NULL")
    assert started.status_code == 303, started.text
    async with Store(database) as store:
        (job,) = await store.backfills("acme")  # what GET /v1/backfills lists
    assert (job.table_name, job.integration_id, job.filter, job.state) == (
        "public.docs", integration_id, "title IS NOT NULL", "running")
    assert started.headers["location"] == f"/portal/o/acme/backfills?started={job.id}"
    page = client.get(started.headers["location"]).text
    assert f"Backfill {job.id} started" in page and "New endpoint" in page
    fragment = client.get("/portal/o/acme/backfills", headers=HTMX).text
    assert fragment.startswith('<div id="backfills" hx-get="/portal/o/acme/backfills" hx-trigger="every 2s"')
    assert "<html" not in fragment and 'data-backfill-action="pause"' in fragment
    async with Store(database) as store:  # the capture process's progress, as it writes it after a chunk
        await store.note_backfill_progress(dataclasses.replace(
            job, key_columns=["id"], cursor=["412"], rows_estimated=1000, rows_read=412, rows_published=400,
            rows_superseded=12, chunks=1), timedelta(seconds=30))
    fragment = client.get("/portal/o/acme/backfills", headers=HTMX).text
    assert '<progress max="100" value="41.2"' in fragment and "41.2%" in fragment
    assert "412 of ~1,000 / 400 / 12" in fragment and 'hx-trigger="every 2s"' in fragment
    async with Store(database) as store:
        await store.finish_backfill(job.id, "done")
    fragment = client.get("/portal/o/acme/backfills", headers=HTMX).text
    assert 'data-backfill-state>done' in fragment and "100.0%" in fragment
    assert "hx-trigger" not in fragment and "data-backfill-action" not in fragment  # nothing runs: polling stops


@pytest.mark.parametrize(("fields", "status", "words"), [
    ({"entity_key": "keyless"}, 422, "no primary key and no replica identity index"),
    ({"filter": "colour = 'red'"}, 422, "unknown column(s) colour"),
    ({"filter": "id > 1 OR true"}, 422, "expected AND"),
    ({"entity_key": "nope"}, 422, "no captured table 'nope'"),
    ({"target": "everyone"}, 422, "target: choose every subscriber or one of the integrations"),
    ({"filter": "x" * 2001}, 422, "filter: String should have at most 2000 characters"),
])
def test_a_refused_backfill_says_why_under_the_form(client: TestClient, fields: dict[str, str], status: int,
                                                   words: str) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    response = _start(client, "acme", csrf, **fields)
    assert response.status_code == status
    message = _form_error(response.text)
    assert words in message and "\n" not in message, message
    assert f'value="{fields.get("filter", "")[:20]}' in html.unescape(response.text)  # kept as typed
    assert client.get("/v1/backfills", headers=key).json() == []


def test_a_second_backfill_of_the_same_table_and_target_is_refused(client: TestClient) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    integration_id = _integration(client, key, events="docs:*,read")
    assert _start(client, "acme", csrf, target=str(integration_id)).status_code == 303
    again = _start(client, "acme", csrf, target=str(integration_id))
    assert again.status_code == 409
    assert "already running or paused; cancel it or wait for it to end" in _form_error(again.text)
    assert _start(client, "acme", csrf).status_code == 303  # another target: fine
    assert len(client.get("/v1/backfills", headers=key).json()) == 2


def test_pause_resume_and_cancel_change_the_job_and_redraw_the_list(client: TestClient) -> None:
    key = organization(client, "acme")
    _integration(client, key, events="docs:read")
    csrf = signed_in(client, key, "acme")
    job = client.post("/v1/backfills", json={"entity_key": "docs"}, headers=key).json()
    base = f"/portal/o/acme/backfills/{job['id']}"
    headers = {**HTMX, "x-csrf-token": csrf}
    paused = client.post(f"{base}/pause", headers=headers).text
    assert "data-backfill-state>paused" in paused and 'data-backfill-action="resume"' in paused
    assert "hx-trigger" not in paused  # a paused job does not move: no polling
    assert client.get(f"/v1/backfills/{job['id']}", headers=key).json()["state"] == "paused"
    late = client.post(f"{base}/pause", headers=headers)  # as from a page drawn before the pause
    assert late.status_code == 200 and f"backfill {job['id']} is paused; pause applies to a running" in late.text
    assert "data-backfill-state>running" in client.post(f"{base}/resume", headers=headers).text
    plain = client.post(f"{base}/cancel", data={"csrf": csrf}, follow_redirects=False)  # without htmx
    assert plain.status_code == 303 and plain.headers["location"] == "/portal/o/acme/backfills"
    assert client.get(f"/v1/backfills/{job['id']}", headers=key).json()["state"] == "cancelled"
    assert client.post(f"{base}/explode", headers=headers).status_code == 422
    assert client.post(f"{base}/pause", headers={**HTMX, "x-csrf-token": "wrong"}).status_code == 403


def test_another_organization_cannot_see_or_change_a_backfill(client: TestClient) -> None:
    acme = organization(client, "acme")
    acme_integration = _integration(client, acme)
    job = client.post("/v1/backfills", json={"entity_key": "docs", "integration_id": acme_integration},
                      headers=acme).json()
    globex = organization(client, "globex")
    csrf = signed_in(client, globex, "globex")
    headers = {**HTMX, "x-csrf-token": csrf}
    for action in ("pause", "resume", "cancel"):
        response = client.post(f"/portal/o/globex/backfills/{job['id']}/{action}", headers=headers)
        assert response.status_code == 404 and f"backfill {job['id']} does not exist" in response.text
    assert client.get("/portal/o/acme/backfills").status_code == 404
    assert client.post(f"/portal/o/acme/backfills/{job['id']}/pause", headers=headers).status_code == 404
    foreign = _start(client, "globex", csrf, target=str(acme_integration))
    assert foreign.status_code == 404
    page = client.get("/portal/o/globex/backfills").text
    assert "No backfills yet." in page and f'value="{acme_integration}"' not in page
    assert client.get(f"/v1/backfills/{job['id']}", headers=acme).json()["state"] == "running"  # untouched
    assert client.get("/v1/backfills", headers=globex).json() == []


def test_a_view_only_session_follows_backfills_but_cannot_start_or_change_them(client: TestClient) -> None:
    key = organization(client, "acme")
    _integration(client, key, events="docs:read")
    job = client.post("/v1/backfills", json={"entity_key": "docs"}, headers=key).json()
    csrf = signed_in(client, key, "acme", capabilities=["view"])
    page = client.get("/portal/o/acme/backfills").text
    assert f'id="backfill-{job["id"]}"' in page and "backfill-form" not in page and "data-backfill-action" not in page
    refused = _start(client, "acme", csrf)
    assert refused.status_code == 403 and "recover" in refused.text
    assert client.post(f"/portal/o/acme/backfills/{job['id']}/cancel", data={"csrf": csrf}).status_code == 403
    assert len(client.get("/v1/backfills", headers=key).json()) == 1


def test_a_poll_after_the_session_ended_sends_the_page_to_sign_in(client: TestClient) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    assert client.get("/portal/o/acme/backfills", headers=HTMX).status_code == 200
    client.post("/portal/logout", data={"csrf": csrf}, follow_redirects=False)
    polled = client.get("/portal/o/acme/backfills", headers=HTMX, follow_redirects=False)
    assert polled.status_code == 401 and polled.headers["hx-redirect"] == "/portal/login"  # no polling on with 401s
    posted = client.post("/portal/o/acme/backfills", headers=HTMX, data={"csrf": csrf, "entity_key": "docs"},
                         follow_redirects=False)
    assert posted.status_code == 401 and "hx-redirect" not in posted.headers  # a form keeps what was typed
