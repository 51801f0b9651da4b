"""Smoke version of the delivery benchmark (bench/delivery.py): tiny sizes, correctness only, no speed.

The benchmark's own code runs against the session's stack: 300 events for 3 integrations at the
counting Python receiver, with one publisher, with two publishers in one group, and with one
more integration whose endpoint never answers. Every delivery must arrive (receiver counts) and be
``succeeded`` in the store (the run waits for that). wrk and nginx are not needed here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.receivers import PythonReceiver
from bench.workload import Workload, run_walhook
from tests.conftest import Servers

WORKLOAD = Workload(events=300, integrations=3, entities=20, partitions=3)


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PythonReceiver]:
    with PythonReceiver(tmp_path_factory.mktemp("receiver")) as started:
        yield started


@pytest.mark.parametrize(("name", "publishers", "hanging"), [("one", 1, False), ("two", 2, False),
                                                              ("hanging", 1, True)])
async def test_every_delivery_arrives(database: str, servers: Servers, workdir: Path, receiver: PythonReceiver,
                                      name: str, publishers: int, hanging: bool) -> None:
    before = await asyncio.to_thread(receiver.counts)
    run = await run_walhook(database, servers.bootstrap_servers, workdir, name, receiver.url, WORKLOAD,
                            publishers=publishers, hanging=hanging, timeout=60)
    after = await asyncio.to_thread(receiver.counts)

    per_integration = WORKLOAD.events // WORKLOAD.integrations
    arrived = {f"/i{n}": after.get(f"/i{n}", 0) - before.get(f"/i{n}", 0) for n in range(WORKLOAD.integrations)}
    assert arrived == {f"/i{n}": per_integration for n in range(WORKLOAD.integrations)}
    assert run.deliveries == WORKLOAD.events
    assert run.attempts == WORKLOAD.events  # a receiver that answers 200 needs no retries
    assert run.seconds > 0 and all(mb > 0 for mb in run.peak_rss_mb) and len(run.peak_rss_mb) == publishers
    if hanging:
        assert run.hanging_connections > 0  # the hanging integration was attempted, and held its lane only
