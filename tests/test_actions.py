"""Each management action through all three front ends (the API, the portal, the CLI) has the same outcome.

The copies of each action had drifted apart (the portal's create skipped the cap, its disable kept no
consumer positions, its edit form set secrets without the capability). Now each front end is an
adapter over ``control.actions``; this test runs the same script of actions through each, each in its
own organization, and compares what the store holds afterwards.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
from starlette.testclient import TestClient

from control.api.app import create_app
from models.settings import KafkaSettings, Settings
from models.topics import ensure_topic
from tests.conftest import Servers
from tests.portal_support import ADMIN, DOCS, csrf_of, open_link, organization, portal_link

CAP = 2  # [api] max_integrations_per_organization
FORM = {"url": "http://127.0.0.1:9/hook", "events": ["docs:created"], "ordering": "entity", "batch_size": "1",
        "send_traceparent": "on"}


class Api:
    """The management API with the organization's key."""

    def __init__(self, client: TestClient, key: dict[str, str]) -> None:
        self.client, self.key = client, key

    def create(self, org: str) -> int | None:
        made = self.client.post("/v1/integrations", json={"url": FORM["url"], "events": FORM["events"],
                                                                 "send_traceparent": True},
                                headers=self.key)
        return made.json()["id"] if made.status_code == 201 else None

    def disable(self, org: str, integration: int) -> None:
        assert self.client.post(f"/v1/integrations/{integration}/disable", headers=self.key).status_code == 200

    def enable(self, org: str, integration: int) -> None:
        assert self.client.post(f"/v1/integrations/{integration}/enable", headers=self.key).status_code == 200

    def rotate(self, org: str, integration: int) -> None:
        rotated = self.client.post(f"/v1/integrations/{integration}/secret/rotate", json={"overlap_hours": 1},
                                   headers=self.key)
        assert rotated.status_code == 200, rotated.text

    def replay(self, org: str, integration: int) -> int:
        job = self.client.post(f"/v1/integrations/{integration}/replay", json={"offset": 0}, headers=self.key)
        assert job.status_code == 202, job.text
        return int(job.json()["id"])

    def cancel(self, org: str, job: int) -> None:
        assert self.client.post(f"/v1/replay-jobs/{job}/cancel", headers=self.key).status_code == 200


class Portal:
    """The portal, signed in through a link with every capability."""

    def __init__(self, client: TestClient, csrf: str) -> None:
        self.client, self.headers = client, {"x-csrf-token": csrf}

    def post(self, path: str, data: dict[str, Any] | None = None) -> Any:
        return self.client.post(path, data=data or {}, headers=self.headers, follow_redirects=False)

    def create(self, org: str) -> int | None:
        made = self.post(f"/portal/o/{org}/integrations", FORM)
        found = re.search(r"/integrations/(\d+)\?saved=1", made.headers.get("location", ""))
        return int(found.group(1)) if made.status_code == 303 and found else None

    def disable(self, org: str, integration: int) -> None:
        assert self.post(f"/portal/o/{org}/integrations/{integration}/disable").status_code == 303

    def enable(self, org: str, integration: int) -> None:
        assert self.post(f"/portal/o/{org}/integrations/{integration}/enable").status_code == 303

    def rotate(self, org: str, integration: int) -> None:
        assert self.post(f"/portal/o/{org}/integrations/{integration}/secret/rotate",
                         {"overlap_hours": "1"}).status_code == 200

    def replay(self, org: str, integration: int) -> int:
        started = self.post(f"/portal/o/{org}/integrations/{integration}/replay", {"offset": "0"})
        assert started.status_code == 200, started.text
        return int(re.search(r"/replay-jobs/(\d+)", started.text).group(1))  # type: ignore[union-attr]

    def cancel(self, org: str, job: int) -> None:
        assert self.post(f"/portal/o/{org}/replay-jobs/{job}/cancel").status_code == 200


class Cli:
    """The operator's command line on the same store."""

    def __init__(self, config: Path) -> None:
        self.config = config

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "walhook", "--log-level", "ERROR", "--config", str(self.config),
                               *args], capture_output=True, text=True, timeout=60)

    def json(self, *args: str) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr
        return orjson.loads(done.stdout)

    def create(self, org: str) -> int | None:
        made = self.run("integrations", "add", "--org", org, "--url", FORM["url"], "--events", "docs:created",
                        "--send-traceparent", "--json")
        if made.returncode != 0:
            assert "max_integrations_per_organization" in made.stderr and len(made.stderr.splitlines()) == 1
            return None
        return int(orjson.loads(made.stdout)["id"])

    def disable(self, org: str, integration: int) -> None:
        assert self.run("integrations", "disable", str(integration)).returncode == 0

    def enable(self, org: str, integration: int) -> None:
        assert self.run("integrations", "enable", str(integration)).returncode == 0

    def rotate(self, org: str, integration: int) -> None:
        self.json("orgs", "rotate-secret", org, "--integration", str(integration), "--overlap-hours", "1")

    def replay(self, org: str, integration: int) -> int:
        return int(self.json("replay", "--integration", str(integration), "--offset", "0")["id"])

    def cancel(self, org: str, job: int) -> None:
        self.json("replay-jobs", "cancel", str(job))


def run_script(front: Any, org: str) -> None:
    """The same actions in the same order: create past the cap, disable, enable, rotate, replay, cancel."""
    made = [front.create(org) for _ in range(CAP + 1)]
    assert made[-1] is None and None not in made[:-1], f"{type(front).__name__}: {made}"  # the cap holds
    first = made[0]
    front.disable(org, first)
    front.enable(org, first)  # with its catch-up replay job
    front.rotate(org, first)  # the old secret signs for an hour more
    front.cancel(org, front.replay(org, first))


def outcome(database: str, org: str) -> dict[str, Any]:
    """What the store holds of the organization, without ids, names or times that differ by front end."""
    with psycopg.connect(database) as conn:
        def rows(sql: str) -> list[tuple[Any, ...]]:
            return conn.execute(sql, {"org": org}).fetchall()
        return {
            "integrations": rows("SELECT url, enabled, events::text, catching_up_job IS NOT NULL, send_traceparent "
                                 "FROM walhook.integrations WHERE organization_id = %(org)s ORDER BY created_at"),
            "secrets": rows("SELECT integration_id IS NULL, expires_at IS NULL, count(*) FROM walhook.signing_secrets "
                            "WHERE organization_id = %(org)s GROUP BY 1, 2 ORDER BY 1, 2"),
            # a catch-up's progress holds the consumer positions its disable kept (the portal's kept none)
            "replay_jobs": rows("SELECT reason, start_offset, since IS NOT NULL, progress::text, cancel_requested "
                                "OR state = 'cancelled' FROM walhook.replay_jobs WHERE organization_id = %(org)s "
                                "ORDER BY id"),
        }


def test_each_action_has_the_same_outcome_through_the_api_the_portal_and_the_cli(
        database: str, servers: Servers, topic: str, tmp_path: Path) -> None:
    kafka = KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=2)
    asyncio.run(ensure_topic(kafka))
    settings = Settings(store={"dsn": database, "plaintext_secrets": True}, kafka=kafka.model_dump(),
                        api={"admin_token": ADMIN, "max_integrations_per_organization": CAP},
                        publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[DOCS])
    config = tmp_path / "walhook.toml"
    config.write_text(f'[kafka]\nbootstrap_servers = "{servers.bootstrap_servers}"\ntopic = "{topic}"\n'
                      f'[store]\ndsn = "{database}"\n'
                      f'plaintext_secrets = true\n[api]\nmax_integrations_per_organization = {CAP}\n'
                      '[publisher]\nallowed_networks = ["127.0.0.1/32"]\n[[entities]]\n'
                      + "".join(f'{name} = "{value}"\n' for name, value in DOCS.items()))
    with TestClient(create_app(settings)) as client, TestClient(create_app(settings)) as browser:
        fronts: dict[str, Callable[[], Any]] = {
            "via-api": lambda: Api(client, organization(client, "via-api")),
            "via-portal": lambda: _portal(browser, organization(browser, "via-portal")),
            "via-cli": lambda: (organization(client, "via-cli"), Cli(config))[1],
        }
        for org, front in fronts.items():
            run_script(front(), org)
    outcomes = {org: outcome(database, org) for org in fronts}
    assert outcomes["via-api"]["integrations"][0][1] is True  # enabled again
    assert all(row[4] is True for row in outcomes["via-api"]["integrations"])  # each opted in to traceparent
    assert outcomes["via-portal"] == outcomes["via-api"], "the portal differs from the API"
    assert outcomes["via-cli"] == outcomes["via-api"], "the CLI differs from the API"


def _portal(browser: TestClient, key: dict[str, str]) -> Portal:
    open_link(browser, portal_link(browser, key))
    return Portal(browser, csrf_of(browser.get("/portal/o/via-portal/integrations").text))

