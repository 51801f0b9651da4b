"""The portal's webhook jobs, chart and catalogue, and one organization never reaching another's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.routing import APIRoute
from starlette.testclient import TestClient

from control.api.app import create_app
from control.portal.pages_integrations import bars
from control.portal.pages_jobs import PAGE_SIZE
from control.portal.routes import ROUTERS
from models.settings import Settings
from publisher.store import AttemptRecord, NewDelivery, Store
from publisher.store.rows import HourCounts
from tests.portal_support import ADMIN, DOCS, organization, signed_in


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id serial PRIMARY KEY, org text, title text, tags text[], "
                     "price numeric, secret_note text)")
    settings = Settings(store={"dsn": database, "plaintext_secrets": True}, source={"dsn": database},
                        api={"admin_token": ADMIN},
                        publisher={"allowed_networks": ["127.0.0.1/32"]},
                        entities=[{**DOCS, "exclude_columns": ["secret_note"]}])
    with TestClient(create_app(settings)) as test_client:
        yield test_client


async def _jobs(database: str, org: str, integration_id: int, count: int) -> list[int]:
    """``count`` deliveries of the integration (alternating created/updated), each with one attempt."""
    body = b'{"entityKey": "docs", "operationType": "created"}'
    new = [NewDelivery(integration_id, org, f"evt_{org}_{n:04d}", f"evt_{org}_{n:04d}_i{integration_id}", "docs",
                       f"docs/{n}", ("created", "updated")[n % 2], body) for n in range(count)]
    async with Store(database) as store:
        created = await store.create_deliveries(new, timedelta(seconds=1))
        await store.record_attempts([AttemptRecord(
            d.id, integration_id, 1, "scheduled", datetime.now(UTC), "http://127.0.0.1:9/hook",
            {"webhook-id": d.webhook_id}, 500 if i % 3 == 0 else 204, {"server": "test"}, b'{"ok": false}', 12.5,
            None, "failed" if i % 3 == 0 else "succeeded", None) for i, d in enumerate(created)])
        return [d.id for d in created]


def _integration(client: TestClient, key: dict[str, str]) -> int:
    made = client.post("/v1/integrations", json={"url": "http://127.0.0.1:9/hook", "events": ["docs:*"]}, headers=key)
    return int(made.json()["id"])


async def test_the_log_filters_pages_and_opens_a_job(client: TestClient, database: str) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    ids = await _jobs(database, "acme", _integration(client, key), PAGE_SIZE + 5)
    first = client.get("/portal/o/acme/jobs").text
    shown = [int(n) for n in re.findall(r'/jobs/(\d+)">#', first)]
    assert shown == sorted(ids, reverse=True)[:PAGE_SIZE]
    older = re.search(r'hx-get="(/portal/o/acme/jobs\?cursor=\d+)"', first)
    assert older
    rest = client.get(older.group(1), headers={"hx-request": "true"})
    assert "<html" not in rest.text
    assert [int(n) for n in re.findall(r'/jobs/(\d+)">#', rest.text)] == sorted(ids)[:5][::-1]
    failed = client.get("/portal/o/acme/jobs?status=failed&operation=updated", headers={"hx-request": "true"}).text
    assert failed.count("pill bad") == len([i for i in range(len(ids)) if i % 3 == 0 and i % 2 == 1])
    assert client.get("/portal/o/acme/jobs?entity_path=docs/7").text.count('">#') == 1
    job = client.get(f"/portal/o/acme/jobs/{ids[7]}").text
    assert "evt_acme_0007_i" in job and "&#34;entityKey&#34;: &#34;docs&#34;" in job and "Run 1" in job
    assert "webhook-id: evt_acme_0007" in job and "server: test" in job
    again = client.post(f"/portal/o/acme/jobs/{ids[7]}/redeliver", headers={"x-csrf-token": csrf, "hx-request": "true"})
    assert again.status_code == 200 and "1 delivery scheduled" in again.text
    assert client.get(f"/v1/deliveries/{ids[7]}", headers=key).json()["status"] == "pending"


async def test_the_list_shows_numbers_of_the_last_day_and_the_backlog(client: TestClient, database: str) -> None:
    key = organization(client, "acme")
    signed_in(client, key, "acme")
    await _jobs(database, "acme", _integration(client, key), 6)
    page = client.get("/portal/o/acme/integrations").text
    assert '<span class="good">4</span> / <span class="bad-text">2</span>' in page
    assert '<span class="number" id="backlog">0</span>' in page and page.count("<rect ") == 2
    assert "(204)" in page  # the last attempt's answer


def test_bars_stack_per_hour_scaled_to_the_busiest() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    drawn = bars([HourCounts(start, {"succeeded": 3, "failed": 1}),
                  HourCounts(start + timedelta(hours=1), {"pending": 2})])
    assert [(b.x, b.status, b.height) for b in drawn] == [(0, "ok", 60.0), (0, "bad", 20.0), (12, "wait", 40.0)]
    assert drawn[1].y == 0.0 and drawn[2].label == "01:00 UTC: 2 pending"


def test_the_catalogue_lists_properties_with_their_types(client: TestClient) -> None:
    signed_in(client, organization(client, "acme"), "acme")
    page = client.get("/portal/o/acme/catalogue").text
    assert "<code>tags</code></td><td>text[]</td><td>array of string" in page
    assert "<code>price</code></td><td>numeric</td><td>string (exact decimal)" in page
    assert "secret_note" not in page and "evt_sample_created" in page


def _portal_routes() -> list[tuple[str, str]]:
    """Every organization route of the portal, from its explicit router list."""
    return [(method, route.path) for router in ROUTERS for route in router.routes
            if isinstance(route, APIRoute) and route.path.startswith("/portal/o/")
            for method in sorted(route.methods) if method != "HEAD"]


async def test_another_organization_sees_nothing_of_the_first(client: TestClient, database: str) -> None:
    acme = organization(client, "acme")
    integration_id = _integration(client, acme)
    (delivery_id,) = await _jobs(database, "acme", integration_id, 1)
    job = client.post(f"/v1/integrations/{integration_id}/replay", json={"offset": 0}, headers=acme).json()
    backfill = client.post("/v1/backfills", json={"entity_key": "docs", "integration_id": integration_id},
                           headers=acme).json()
    globex = organization(client, "globex")
    csrf = signed_in(client, globex, "globex")
    _integration(client, globex)
    routes = _portal_routes()
    assert len(routes) == 24, routes  # a new route must be added here knowingly
    form = {"entity_key": "docs", "operation": "created", "confirm": "yes", "overlap_hours": "1", "since": "2020-01-01",
            "offset": "0", "url": "http://127.0.0.1:9/x", "events": "docs:created", "reason": "x",
            "integration_id": str(integration_id)}
    for org in ("acme", "globex"):  # acme's ids through acme's URLs, and through globex's own
        for method, path in routes:
            url = path.format(organization_id=org, integration_id=integration_id, delivery_id=delivery_id,
                              job_id=job["id"], backfill_id=backfill["id"], action="pause")
            if path.endswith(("/integrations", "/integrations/new", "/jobs", "/catalogue", "/backfills")) \
                    and org == "globex":
                continue  # globex's own lists, checked below
            if path.endswith(("/integrations/only-when", "/integrations/sample")) and org == "globex":
                continue  # the "only when" rows, the Add page's sample: the form posted, no integration's data
            response = client.request(method, url, data=form if method == "POST" else None,
                                      headers={"x-csrf-token": csrf, "hx-request": "true"})
            assert response.status_code == 404, (method, url, response.status_code, response.text[:200])
    for page in ("integrations", "jobs", "catalogue", "backfills"):
        text = client.get(f"/portal/o/globex/{page}").text
        assert "acme" not in text.replace("globex", ""), page
    assert client.get("/v1/deliveries", headers=acme).json()["items"][0]["status"] == "failed"  # untouched
    assert client.get(f"/v1/replay-jobs/{job['id']}", headers=acme).json()["cancel_requested"] is False
    assert client.get(f"/v1/backfills/{backfill['id']}", headers=acme).json()["state"] == "running"


def test_a_replay_job_shows_its_progress_and_can_be_cancelled(client: TestClient) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    integration_id = _integration(client, key)
    headers = {"x-csrf-token": csrf, "hx-request": "true"}
    base = f"/portal/o/acme/integrations/{integration_id}"
    assert client.post(f"{base}/replay", data={"offset": "0", "since": "2026-01-01T00:00"},
                       headers=headers).status_code == 422
    started = client.post(f"{base}/replay", data={"offset": "0"}, headers=headers)
    job_id = int(re.search(r'id="replay-job-(\d+)"', started.text).group(1))  # type: ignore[union-attr]
    assert 'hx-trigger="every 1s"' in started.text and "from offset 0" in started.text  # it polls while running
    assert client.get(f"/v1/replay-jobs/{job_id}", headers=key).json()["state"] == "running"
    cancelled = client.post(f"/portal/o/acme/replay-jobs/{job_id}/cancel", headers=headers)
    assert "Cancelling" in cancelled.text
    assert client.get(f"/v1/replay-jobs/{job_id}", headers=key).json()["cancel_requested"] is True
    assert f'id="replay-job-{job_id}"' in client.get(base).text  # the integration's page lists its jobs


async def test_jobs_and_headings_name_the_integration(client: TestClient, database: str) -> None:
    """The jobs log showed a bare integration id, the edit page's heading "Integration 7", and the entity
    path filter another deployment's example path (pipelinesPackets/7/comments/1)."""
    key = organization(client, "acme")
    signed_in(client, key, "acme")
    made = client.post("/v1/integrations", json={"url": "http://127.0.0.1:9/crm-hook", "events": ["docs:*"],
                                                 "name": "CRM sync"}, headers=key).json()
    (delivery_id,) = await _jobs(database, "acme", made["id"], 1)
    log = client.get("/portal/o/acme/jobs").text
    named = f'<a href="/portal/o/acme/integrations/{made["id"]}">CRM sync</a><div class="muted">http://127.0.0.1:9/crm-hook'
    assert named in log
    assert 'placeholder="docs/' in log and "pipelinesPackets" not in log  # this deployment's entity: docs/{id}
    one = client.get(f"/portal/o/acme/jobs?integration_id={made['id']}", headers={"hx-request": "true"}).text
    assert '<h2 id="jobs-of">Jobs of CRM sync</h2>' in one and named in one
    assert "<h1>CRM sync</h1>" in client.get(f"/portal/o/acme/integrations/{made['id']}").text
    assert ">CRM sync</a> <span class=\"muted\">http://127.0.0.1:9/crm-hook" in \
        client.get(f"/portal/o/acme/jobs/{delivery_id}").text
