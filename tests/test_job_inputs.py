"""Replay job inputs: refused where they are asked for, and never able to stop a publisher.

A replay "since" a moment before 1970 once answered 202 and then crashed every publisher that
claimed the job, again after each restart (security review 2, H1). These tests hold the three
halves of the fix: every front end refuses such input naming the field, a job that fails for any
reason ends ``failed`` while the publisher goes on, and a cancel asked for before a job ran
means nothing is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from cdc.kafka import ensure_topic
from control.api.app import create_app
from models.errors import Conflict
from models.settings import KafkaSettings, Settings
from publisher.errors import JobRefused
from publisher.jobs.replay import ReplayRunner
from publisher.jobs.replay_input import replay_start
from publisher.store import Store
from tests.conftest import Servers
from tests.portal_support import ADMIN, DOCS, admin_headers, organization, signed_in
from tests.receivers import ScriptedReceiver
from tests.test_delivery import event, org_with, produce, publishing, until
from tests.test_recovery import finished

BEFORE_1970 = "1969-12-31T23:59:59Z"


def test_the_start_of_a_replay_is_checked_in_one_place() -> None:
    assert replay_start(0, None) == (0, None)
    assert replay_start(None, datetime(1970, 1, 1)) == (None, datetime(1970, 1, 1, tzinfo=UTC))  # naive is UTC
    for offset, since, field in [(None, None, "either"), (1, datetime.now(UTC), "either"), (-1, None, "offset"),
                                 (2**63, None, "offset"), (None, datetime(1969, 12, 31, tzinfo=UTC), "since"),
                                 (None, datetime(1, 1, 1, tzinfo=UTC), "since")]:
        with pytest.raises(JobRefused, match=field):
            replay_start(offset, since)


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    settings = Settings(store={"dsn": database, "plaintext_secrets": True}, api={"admin_token": ADMIN},
                        publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[DOCS])
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_the_api_and_the_portal_refuse_a_replay_before_1970_naming_since(client: TestClient) -> None:
    key = organization(client, "acme")
    made = client.post("/v1/integrations", json={"url": "http://127.0.0.1:9/hook", "events": ["docs:*"]}, headers=key)
    integration_id = made.json()["id"]
    api = client.post(f"/v1/integrations/{integration_id}/replay", json={"since": BEFORE_1970}, headers=key)
    assert api.status_code == 422 and "since" in api.json()["detail"], api.text
    csrf = signed_in(client, key, "acme")
    portal = client.post(f"/portal/o/acme/integrations/{integration_id}/replay", data={"since": "1969-12-31T23:59"},
                         headers={"x-csrf-token": csrf, "hx-request": "true"})
    assert portal.status_code == 422 and "since" in portal.text
    assert client.get("/v1/replay-jobs", headers=key).json() == []  # nothing was stored


async def _stored_job(database: str, org: str, integration_id: int, since: str, *, cancelled: bool = False) -> int:
    """A job row written straight to the store, as a job asked for before the check existed would be."""
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        row = await (await conn.execute(
            "INSERT INTO walhook.replay_jobs (organization_id, integration_id, since, reason, cancel_requested) "
            "VALUES (%s, %s, %s, 'requested', %s) RETURNING id", [org, integration_id, since, cancelled])).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_job_that_cannot_run_fails_with_its_reason_and_the_publisher_goes_on(
        servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, ids), \
            publishing(servers, topic, store):
        job = await finished(store, await _stored_job(database, "acme", ids["hook"], BEFORE_1970))
        await produce(servers, topic, [event(1)])
        await until(lambda: len(receiver.verified()) == 1)  # the publisher is still there
    assert job.state == "failed" and job.error is not None and "ValueError" in job.error


async def test_a_job_cancelled_before_it_ran_reads_nothing(servers: Servers, database: str, topic: str) -> None:
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, ids), \
            publishing(servers, topic, store):
        await produce(servers, topic, [event(1)])
        await until(lambda: len(receiver.verified()) == 1)
        job = await finished(store, await _stored_job(database, "acme", ids["hook"], "2000-01-01T00:00:00Z",
                                                      cancelled=True))
    assert (job.state, job.scanned, job.scheduled) == ("cancelled", 0, 0)


# What a client may put in a replay body: numbers of every size and sign, moments far from now
# (often before 1970) in every form, strings that are no moment, and fields that do not belong.
_OFFSETS = st.one_of(st.none(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=8))
_EARLY = st.datetimes(max_value=datetime(1970, 1, 2))
_MOMENTS = st.one_of(st.none(), _EARLY.map(datetime.isoformat), _EARLY.map(lambda d: d.isoformat() + "Z"),
                     st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat), st.text(max_size=30),
                     st.integers(-(2**40), 2**40))
_BODIES = st.one_of(st.builds(lambda offset: {"offset": offset}, _OFFSETS),
                    st.builds(lambda since: {"since": since}, _MOMENTS),
                    st.fixed_dictionaries({}, optional={"offset": _OFFSETS, "since": _MOMENTS, "extra": st.integers()}))


async def test_random_replay_bodies_never_stop_the_publisher(servers: Servers, database: str, topic: str) -> None:
    """Bodies posted while a publisher runs: each is refused (4xx) or becomes a job that ends; the
    publisher still delivers afterwards, and no job stays running."""
    settings_ = Settings(store={"dsn": database, "plaintext_secrets": True}, api={"admin_token": ADMIN},
                         publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[DOCS])
    async with ScriptedReceiver() as receiver, org_with(database, receiver, "hook") as (store, ids), \
            publishing(servers, topic, store):
        await produce(servers, topic, [event(1)])
        await until(lambda: len(receiver.verified()) == 1)
        statuses = await asyncio.to_thread(_post_bodies, settings_, ids["hook"])
        assert {202, 422} <= statuses <= {202, 409, 422}, statuses  # 409: the organization's queue is full
        await _all_jobs_end(store)
        await produce(servers, topic, [event(2, entity="docs/2")])
        await until(lambda: any(hit.event["eventId"] == event(2)["eventId"] for hit in receiver.verified()))


def _post_bodies(settings_: Settings, integration_id: int) -> set[int]:
    statuses: set[int] = set()
    with TestClient(create_app(settings_)) as client:
        made = client.post("/v1/organizations/acme/keys", json={"name": "fuzz"}, headers=admin_headers())
        key = {"authorization": f"Bearer {made.json()['key']}"}

        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(_BODIES)
        def post(body: dict[str, object]) -> None:
            response = client.post(f"/v1/integrations/{integration_id}/replay", json=body, headers=key)
            statuses.add(response.status_code)

        post()
    return statuses


async def _all_jobs_end(store: Store, timeout: float = 120.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while running := await store.replay_jobs("acme", state="running", limit=500):
        assert asyncio.get_running_loop().time() < deadline, f"{len(running)} replay jobs still running"
        await asyncio.sleep(0.2)


async def test_jobs_take_turns_across_organizations(servers: Servers, database: str, topic: str) -> None:
    """M3: one organization's queued replays once ran first come, first served before another's."""
    kafka = KafkaSettings(bootstrap_servers=servers.bootstrap_servers, topic=topic, partitions=2)
    await ensure_topic(kafka)
    await produce(servers, topic, [event(n, entity=f"docs/{n}", key="users") for n in range(3000)])  # nobody's
    async with Store(database) as store:
        for org in ("acme", "globex"):
            await store.add_organization(org)
        noisy = await store.add_integration("acme", "http://127.0.0.1:9/a", ["docs:*"])
        victim = await store.add_integration("globex", "http://127.0.0.1:9/b", ["docs:*"])
        queued = [await store.create_replay_job("acme", noisy, start_offset=0, limit=5) for _ in range(5)]
        with pytest.raises(Conflict, match=r"already has 5 replay jobs .*max_replay_jobs_per_organization"):
            await store.create_replay_job("acme", noisy, start_offset=0, limit=5)
        theirs = await store.create_replay_job("globex", victim, start_offset=0, limit=5)
        runner = ReplayRunner(store, kafka, timedelta(seconds=30), timedelta(seconds=1), slice_seconds=0.05)
        stop = asyncio.Event()
        running = asyncio.create_task(runner.run_jobs(stop, poll_seconds=0.05))
        try:
            done = await finished(store, theirs.id, timeout=120)
            states = [(await store.replay_job(None, job.id)).state for job in queued]
        finally:
            stop.set()
            await asyncio.wait_for(running, 60)
    assert done.state == "done" and done.scanned == 3000
    assert states.count("running") >= 3, states  # the victim did not wait for the noisy organization's queue


async def test_an_enables_catch_up_is_claimed_before_any_queued_replay(database: str) -> None:
    """M3: the catch-up (whose integration's live changes wait behind it) never queues behind others' jobs."""
    async with Store(database) as store:
        for org in ("acme", "globex"):
            await store.add_organization(org)
        noisy = await store.add_integration("acme", "http://127.0.0.1:9/a", ["docs:*"])
        victim = await store.add_integration("globex", "http://127.0.0.1:9/b", ["docs:*"])
        for _ in range(3):
            await store.create_replay_job("acme", noisy, start_offset=0)
        await store.set_enabled(victim, False, "paused")
        catch_up = await store.enable("globex", victim)
        assert catch_up is not None
        claimed = await store.claim_replay_job(timedelta(seconds=30))
    assert claimed is not None and claimed.id == catch_up.id


async def test_backfills_are_claimed_organization_by_organization(database: str) -> None:
    """M3: backfills ran oldest first, each to its end; now each takes turns, the organization served
    longest ago first."""
    async with Store(database) as store:
        for org in ("acme", "globex"):
            await store.add_organization(org)
        first = await store.create_backfill("public.docs", organization_id="acme")
        second = await store.create_backfill("public.items", organization_id="acme")
        theirs = await store.create_backfill("public.docs", organization_id="globex")
        claimed = await store.claim_backfill(["public.docs", "public.items"], timedelta(seconds=15), "slot s")
        assert claimed is not None and claimed.id == first.id
        assert await store.other_backfills_waiting(first.id, ["public.docs", "public.items"])
        await store.release_backfill(first.id)  # its turn is over
        claimed = await store.claim_backfill(["public.docs", "public.items"], timedelta(seconds=15), "slot s")
    assert claimed is not None and claimed.id == theirs.id != second.id


async def test_an_organization_whose_jobs_end_within_one_slice_still_takes_turns(database: str) -> None:
    """The claim's "served longest ago" counted running jobs only: once a job ended in its first slice its
    organization looked never served again, and all its queued jobs went before another organization's."""
    async with Store(database) as store:
        for org in ("acme", "globex"):
            await store.add_organization(org)
        noisy = await store.add_integration("acme", "http://127.0.0.1:9/a", ["docs:*"])
        victim = await store.add_integration("globex", "http://127.0.0.1:9/b", ["docs:*"])
        queued = [await store.create_replay_job("acme", noisy, start_offset=0) for _ in range(3)]
        theirs = await store.create_replay_job("globex", victim, start_offset=0)
        first = await store.claim_replay_job(timedelta(seconds=30))
        assert first is not None and first.id == queued[0].id
        await store.finish_replay_job(first.id, "done")  # ended within its first slice
        second = await store.claim_replay_job(timedelta(seconds=30))
    assert second is not None and second.id == theirs.id


async def test_backfills_take_turns_when_one_ends_within_its_turn(database: str) -> None:
    async with Store(database) as store:
        for org in ("acme", "globex"):
            await store.add_organization(org)
        mine = [await store.create_backfill(table, organization_id="acme") for table in ("public.docs", "public.notes")]
        theirs = await store.create_backfill("public.docs", organization_id="globex")
        tables = ["public.docs", "public.notes"]
        first = await store.claim_backfill(tables, timedelta(seconds=30), "slot a")
        assert first is not None and first.id == mine[0].id
        await store.finish_backfill(first.id, "done")
        second = await store.claim_backfill(tables, timedelta(seconds=30), "slot a")
    assert second is not None and second.id == theirs.id
