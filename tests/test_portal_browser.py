"""The portal in headless Chromium, on the real stack: Postgres, the broker, ``walhook cdc``,
``walhook publisher`` and ``walhook api`` as processes, and a receiver verifying with ``standardwebhooks``.

One browser and one stack serve the whole module; the flows run in order (each builds on the
last, as a user's session would), so the file runs on one worker (``make test`` uses
``--dist loadfile``). Screenshots at 1280 and 390 px wide are written to a temporary directory,
printed at the end; nothing tracked is rewritten.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.browser import BROWSER_MISSING, launch
from tests.conftest import Servers
from tests.portal_support import ADMIN
from tests.support import COMMENTS_ENTITY, COMMENTS_TABLE, start_walhook, wait_for, write_config
from walhook.demo import wait_for_publisher, wait_for_streaming
from walhook.receiver import VerifyingReceiver
from walhook.stack import free_port, stop_process

pytestmark = [pytest.mark.browser, pytest.mark.skipif(BROWSER_MISSING is not None, reason=BROWSER_MISSING or "")]
SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtYnJvd3Nlci10ZXN0cy0xMjM0"
WIDTHS = (1280, 390)


@dataclass
class Portal:
    url: str
    dsn: str
    receiver: VerifyingReceiver
    browser: Any
    shots: Path
    state: dict[str, Any] = field(default_factory=dict)

    async def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, headers={"authorization": f"Bearer {ADMIN}"}) as client:
            return await client.request(method, path, **kwargs)


def _config(workdir: Path, dsn: str, servers: Servers, topic: str, port: int) -> Path:
    path = write_config(workdir / "walhook.toml", dsn, servers.bootstrap_servers, topic, COMMENTS_ENTITY)
    # A slot of its own: slot names are per cluster, and other tests of this worker share the cluster.
    slot = f'slot = "portal_{port}"\npublication = "portal_{port}"\n'
    text = path.read_text().replace("[source]\n", "[source]\n" + slot, 1)
    # Backfills paced to 7 rows a second in chunks of 7: a page drawn just after the start sees it running.
    path.write_text(text + f'\n[api]\nport = {port}\nadmin_token = "{ADMIN}"\n'
                    '[backfill]\nchunk_rows = 7\nmax_chunk_rows = 7\nmax_rows_per_second = 7\n')
    return path


async def _wait_for_api(url: str, api: Any) -> None:
    for _ in range(200):
        if api.poll() is not None:
            raise AssertionError(f"walhook api exited with {api.returncode}")
        try:
            async with httpx.AsyncClient() as client:
                if (await client.get(url + "/healthz")).status_code == 200:
                    return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("walhook api did not start")


@pytest.fixture(scope="module")
async def portal(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Portal]:
    from tests.conftest import module_database

    workdir = tmp_path_factory.mktemp("portal-stack")
    shots = tmp_path_factory.mktemp("portal-screenshots")
    with module_database(servers) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(COMMENTS_TABLE)
            conn.execute("ALTER TABLE packet_comments ADD COLUMN status text")  # for an "only when" row
        port = free_port()
        config = _config(workdir, dsn, servers, f"walhook.portal.{port}", port)
        processes = [start_walhook(command, config, workdir / f"{command}.log") for command in ("cdc", "publisher",
                                                                                                 "api")]
        try:
            async with VerifyingReceiver() as receiver, launch() as browser:
                await _wait_for_api(f"http://127.0.0.1:{port}", processes[2])
                await wait_for_streaming(dsn, f"portal_{port}", processes[0])
                await wait_for_publisher(servers.bootstrap_servers, f"walhook.portal.{port}.publisher", processes[1])
                yield Portal(f"http://127.0.0.1:{port}", dsn, receiver, browser, shots)
        finally:
            for process in processes:
                stop_process(process)
    print(f"\nportal screenshots: {shots}")


async def _shoot(portal: Portal, page: Any, name: str) -> None:
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": 900})
        await page.screenshot(path=str(portal.shots / f"{name}-{width}.png"), full_page=width == 390)
    await page.set_viewport_size({"width": 1280, "height": 900})


async def test_1_an_operator_hands_out_a_link_that_works_once(portal: Portal) -> None:
    assert (await portal.admin("POST", "/v1/organizations", json={"id": "acme"})).status_code == 201
    operator = await portal.browser.new_context()
    page = await operator.new_page()
    await page.goto(portal.url + "/portal/login")
    await page.fill("#token", ADMIN)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/portal/orgs")
    await page.locator("tr", has_text="acme").get_by_role("button", name="Create portal link").click()
    link = await page.locator("[data-portal-link]").first.input_value()
    assert "/portal/link/" in link
    customer = await portal.browser.new_context()
    portal.state["customer"] = customer
    page = await customer.new_page()
    await page.goto(link)
    await page.click("#open-portal")
    await page.wait_for_url("**/portal/o/acme/integrations")
    assert await page.locator("h1").inner_text() == "Integrations"
    stranger = await (await portal.browser.new_context()).new_page()
    await stranger.goto(link)
    await stranger.click("#open-portal")
    assert "already used" in await stranger.locator(".error").inner_text()
    await operator.close()


async def test_2_add_an_integration_by_ticking_events_and_send_a_sample(portal: Portal) -> None:
    page = await portal.state["customer"].new_page()
    await page.goto(portal.url + "/portal/o/acme/integrations")
    await page.click("text=Add integration")
    await page.fill("#url", portal.receiver.url_for("acme"))
    await page.check('input[value="flows/comments:created"]')
    await page.check('input[value="flows/comments:updated"]')
    await page.fill("#secret", SECRET)
    await page.click("#save")
    await page.wait_for_load_state()
    assert page.url.endswith("?saved=1"), await page.content()
    assert '"flows/comments:created,updated"' in await page.locator("#raw-json").inner_text()
    portal.receiver.secrets["acme"] = SECRET
    await page.select_option('select[name="operation"]', "created")
    await page.click("#send-sample")
    await page.locator("#sample-result .pill").wait_for()
    assert await page.locator("#sample-result .pill").inner_text() == "204"
    (sample,) = portal.receiver.received
    assert sample.webhook_id.startswith("sample_created_") and sample.event["entityKey"] == "flows/comments"
    portal.state["integration_url"] = page.url.split("?")[0]
    await _shoot(portal, page, "edit")


async def test_2b_an_empty_add_page_shows_no_validation_error(portal: Portal) -> None:
    """The RAW JSON box of a new integration asked for a preview of the empty form at once, and showed
    its "field required" errors before anything was typed."""
    page = await portal.state["customer"].new_page()
    await page.goto(portal.url + "/portal/o/acme/integrations/new")
    await page.wait_for_load_state("networkidle")  # any preview the page asks for on its own has come back
    assert "error" not in await page.locator("#raw-json").inner_text()


async def test_2c_the_events_table_fits_a_phone(portal: Portal) -> None:
    """At 390 px nothing is wider than the screen, and the events table shows every column without
    scrolling (its last column, read, was cut off behind a scroll inside its box)."""
    page = await portal.state["customer"].new_page()
    await page.set_viewport_size({"width": 390, "height": 900})
    for path in (portal.state["integration_url"], portal.url + "/portal/o/acme/integrations/new"):
        await page.goto(path)
        table = page.locator("fieldset.events table")
        await table.wait_for()
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390, path
        widths = await table.evaluate("t => [t.scrollWidth, t.parentElement.clientWidth]")
        assert widths[0] <= widths[1], (path, widths)


async def test_3_changes_become_jobs_and_a_job_is_redelivered(portal: Portal) -> None:
    from playwright.async_api import expect

    await asyncio.sleep(3.0)  # publishers take a new integration in within integrations_cache_seconds (2 s)
    with psycopg.connect(portal.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO packet_comments (organization_id, packet_id, content) VALUES ('acme', 7, 'Hi')")
        conn.execute("UPDATE packet_comments SET content = 'Hello' WHERE organization_id = 'acme'")
    await wait_for(lambda: len(portal.receiver.received) >= 3, timeout=60, what="two verified webhooks")
    page = await portal.state["customer"].new_page()
    await page.goto(portal.url + "/portal/o/acme/jobs")
    rows = page.locator("table.jobs tbody tr")
    await expect(rows).to_have_count(2)
    await page.select_option('select[name="operation"]', "created")  # htmx swaps the table on change
    await expect(rows).to_have_count(1)
    await page.locator("table.jobs a").first.click()
    await page.wait_for_url("**/jobs/*")
    created = portal.receiver.received[1]
    assert await page.locator("#job-body").inner_text() == created.body.decode()
    assert await page.locator("#webhook-id").inner_text() == created.webhook_id
    assert "Run 1" in await page.locator(".attempt h3").first.inner_text()
    await _shoot(portal, page, "job")
    await page.click("#redeliver")
    await page.locator("#redelivered .notice").wait_for()
    await wait_for(lambda: len(portal.receiver.received) >= 4, what="the redelivery")
    assert portal.receiver.received[3].webhook_id == created.webhook_id and portal.receiver.rejected == []
    await page.goto(portal.url + "/portal/o/acme/integrations")
    await _shoot(portal, page, "list")


async def test_3b_an_only_when_row_is_saved_and_shown_again_after_a_reload(portal: Portal) -> None:
    from playwright.async_api import expect

    page = await portal.state["customer"].new_page()
    await page.goto(portal.state["integration_url"])
    entity = page.locator('fieldset.only-when[data-entity="flows/comments"]')
    await entity.locator("button.add-row").click()  # an htmx fragment: the entity's rows, one more
    row = entity.locator(".only-row")
    await expect(row).to_have_count(1)
    await row.locator("select").first.select_option("status")
    await row.locator("select.operator").select_option("from_to")
    await row.locator("input.value").fill("review")
    await row.locator("input.to").fill("approved")  # shown (CSS) once the operator is from -> to
    await page.click("#save")
    await page.wait_for_url("**?saved=1")
    await page.reload()
    row = page.locator('fieldset.only-when[data-entity="flows/comments"] .only-row')
    await expect(row).to_have_count(1)
    assert await row.locator("select").first.input_value() == "status"
    assert await row.locator("select.operator").input_value() == "from_to"
    assert (await row.locator("input.value").input_value(), await row.locator("input.to").input_value()) == (
        "review", "approved")
    assert '"from": "review"' in await page.locator("#raw-json").inner_text()
    await row.locator("button.remove-row").click()  # not saved: the RAW JSON box follows the form
    await expect(page.locator('fieldset.only-when[data-entity="flows/comments"] .only-row')).to_have_count(0)
    await expect(page.locator("#raw-json")).not_to_contain_text('"from": "review"')
    await expect(page.locator("#raw-json")).to_contain_text('"flows/comments:created,updated"')


async def test_3c_a_refusal_reaches_the_screen_in_the_servers_words(portal: Portal) -> None:
    """htmx swaps no 4xx answer by default: Reveal without the box ticked, or Replay with neither an offset
    nor a time, did nothing visible."""
    from playwright.async_api import expect

    page = await portal.state["customer"].new_page()
    await page.goto(portal.state["integration_url"])
    await page.click("text=Reveal")
    await expect(page.locator("#secrets")).to_contain_text("tick the box to confirm that the secret may be shown")
    await page.click("button:has-text('Replay')")
    await expect(page.locator("#recovery")).to_contain_text("give either offset or since")
    await page.fill("input[name=offset]", "abc")
    await page.click("button:has-text('Replay')")
    await expect(page.locator("#recovery")).to_contain_text("offset")


async def test_4_another_organization_cannot_see_or_act_and_bad_requests_are_refused(portal: Portal) -> None:
    assert (await portal.admin("POST", "/v1/organizations", json={"id": "globex"})).status_code == 201
    made = await portal.admin("POST", "/v1/organizations/globex/portal-links",
                              json={"capabilities": ["manage_integrations", "secrets", "recover"]})
    other = await portal.browser.new_context()
    page = await other.new_page()
    await page.goto(made.json()["url"])
    await page.click("#open-portal")
    await page.wait_for_url("**/portal/o/globex/integrations")
    csrf = (await page.locator("body").get_attribute("hx-headers") or "").split('"')[3]
    acme_integration = portal.state["integration_url"].replace(portal.url, "")
    response = await page.goto(portal.url + acme_integration)
    assert response is not None and response.status == 404
    fragment = await other.request.post(portal.url + acme_integration + "/secret/reveal", form={"confirm": "yes"},
                                        headers={"x-csrf-token": csrf, "hx-request": "true"})
    assert fragment.status == 404 and "whsec_" not in await fragment.text()
    integration_id = acme_integration.rsplit("/", 1)[1]
    own_path = f"/portal/o/globex/integrations/{integration_id}"
    posted = await other.request.post(portal.url + own_path, form={"csrf": csrf, "url": "http://127.0.0.1:9/x",
                                                                   "events": "flows/comments:deleted"})
    assert posted.status == 404
    no_csrf = await other.request.post(portal.url + "/portal/o/globex/integrations",
                                       form={"url": "http://127.0.0.1:9/x", "events": "flows/comments:deleted"})
    assert no_csrf.status == 403
    expiring = await portal.admin("POST", "/v1/organizations/globex/portal-links", json={"expiry_hours": 0.0003})
    await asyncio.sleep(1.5)
    late = await (await portal.browser.new_context()).new_page()
    await late.goto(expiring.json()["url"])
    await late.click("#open-portal")
    assert "expired" in await late.locator(".error").inner_text()
    await other.close()


async def test_5_a_backfill_started_from_an_integration_follows_its_progress_to_done(portal: Portal) -> None:
    from playwright.async_api import expect

    with psycopg.connect(portal.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO packet_comments (organization_id, packet_id, content) "
                     "SELECT o, 8, 'Row ' || n FROM generate_series(1, 20) n, unnest(ARRAY['acme', 'other']) o")
        rows = conn.execute("SELECT count(*) FROM packet_comments WHERE organization_id = 'acme'").fetchone()[0]
    page = await portal.state["customer"].new_page()
    await page.goto(portal.state["integration_url"])
    row = page.locator('tr[data-entity="flows/comments"]')
    await row.get_by_label("all events of flows/comments").check()  # "all" is KEY:*, the read box stays as it is
    await expect(row.get_by_label("flows/comments deleted")).to_be_checked()
    await expect(row.get_by_label("flows/comments read (backfill rows)")).not_to_be_checked()
    await row.get_by_label("flows/comments read (backfill rows)").check()
    await expect(page.locator("#raw-json")).to_contain_text('"flows/comments:*,read"')  # not saved
    await page.click("#backfill-integration")
    await page.wait_for_url("**/backfills?integration_id=*")
    integration_id = page.url.rsplit("=", 1)[1]
    assert await page.locator("#target").input_value() == integration_id
    await page.fill("#filter", "nope = 1")
    await page.click("#start-backfill")
    assert "unknown column(s) nope" in await page.locator("#backfill-error").inner_text()
    await page.fill("#filter", "packet_id >= 7")
    await page.click("#start-backfill")
    await page.wait_for_url("**/backfills?started=*")
    state = page.locator("[data-backfill-state]").first
    assert await state.inner_text() == "running" and await page.locator("#backfills[hx-trigger]").count() == 1
    await expect(state).to_have_text("done", timeout=20_000)  # the page is not reloaded: the list polls itself
    assert await page.locator("#backfills[hx-trigger]").count() == 0  # and stops once nothing runs
    assert await page.locator("[data-backfill-percent]").first.inner_text() == "100.0%"
    assert await page.locator("[data-backfill-rows]").first.inner_text() == f"{rows} / {rows} / 0"
    await wait_for(lambda: sum(w.event["operationType"] == "read" for w in portal.receiver.received) >= rows,
                   what="the backfill's read events")
    reads = [w for w in portal.receiver.received if w.event["operationType"] == "read"]
    assert len(reads) == rows and {w.organization for w in reads} == {"acme"} and portal.receiver.rejected == []
    await _shoot(portal, page, "backfills")


def test_6_screenshots_of_the_list_the_edit_page_and_the_job_page(portal: Portal) -> None:
    names = {path.name for path in portal.shots.glob("*.png")}
    assert names == {f"{page}-{width}.png" for page in ("edit", "job", "list", "backfills") for width in WIDTHS}
    for path in portal.shots.glob("*.png"):
        width = int.from_bytes(path.read_bytes()[16:20], "big")  # the PNG header's width
        assert width == int(path.stem.rsplit("-", 1)[1]) and path.stat().st_size > 10_000, path.name


async def test_7_the_add_page_sends_a_sample_before_the_first_save(portal: Portal) -> None:
    """A sample needed a saved integration: on the Add page it goes to the URL typed, signed with the secret typed."""
    page = await portal.state["customer"].new_page()
    await page.goto(portal.url + "/portal/o/acme/integrations/new")
    await page.fill("#url", portal.receiver.url_for("acme"))
    await page.check('input[value="flows/comments:created"]')
    await page.fill("#secret", SECRET)
    before = len(portal.receiver.received)
    await page.click("#send-sample")
    await page.locator("#sample-result .pill").wait_for()
    assert await page.locator("#sample-result .pill").inner_text() == "204"
    assert page.url.endswith("/integrations/new")  # nothing was saved: still the Add page
    await wait_for(lambda: len(portal.receiver.received) > before, what="the verified sample")
    assert portal.receiver.received[-1].webhook_id.startswith("sample_created_0_") and portal.receiver.rejected == []
