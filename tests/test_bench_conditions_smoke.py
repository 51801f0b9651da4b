"""Smoke version of the conditions benchmark (bench/conditions.py): tiny sizes, correctness only, no speed.

One run without and one with conditions against the session's stack and the counting Python
receiver: in both, every integration receives exactly its own events and every delivery is
``succeeded``; with conditions, each event was filtered out (and counted) for every other
integration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.conditions import compare, summary
from bench.receivers import PythonReceiver
from bench.workload import Workload
from tests.conftest import Servers

WORKLOAD = Workload(events=200, integrations=5, entities=10, partitions=3)


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PythonReceiver]:
    with PythonReceiver(tmp_path_factory.mktemp("receiver")) as started:
        yield started


async def test_with_and_without_conditions_deliver_the_same(database: str, servers: Servers, workdir: Path,
                                                            receiver: PythonReceiver) -> None:
    before = await asyncio.to_thread(receiver.counts)
    runs = await compare(database, servers.bootstrap_servers, workdir, receiver.url, WORKLOAD, repeats=1,
                         timeout=60)
    after = await asyncio.to_thread(receiver.counts)

    paths = [f"/i{n}" for n in range(WORKLOAD.integrations)]
    per_integration = WORKLOAD.events // WORKLOAD.integrations
    assert {path: after.get(path, 0) - before.get(path, 0) for path in paths} == \
        {path: 2 * per_integration for path in paths}  # once per run
    (without,), (conditioned,) = runs["without"], runs["with"]
    assert without.deliveries == conditioned.deliveries == without.attempts == conditioned.attempts == WORKLOAD.events
    assert without.filtered == 0
    assert conditioned.filtered == WORKLOAD.events * (WORKLOAD.integrations - 1)
    assert summary(runs, WORKLOAD, "python")["with_vs_without"] > 0
