"""Smoke versions of the latency and memory benchmarks (bench/latency.py, bench/memory.py).

Their own core functions run against the session's stack with tiny sizes, so the scripts
cannot rot unnoticed. They check correctness only - every event arrived, the numbers
were measured - never speed: the machine running the tests may be busy with anything.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
from standardwebhooks.webhooks import Webhook

from bench.latency import run_latency, windowed_p99
from bench.latency_receiver import TimingReceiver
from bench.memory import run_memory
from tests.conftest import Servers


async def test_latency_benchmark_delivers_every_committed_row(servers: Servers, database: str, topic: str,
                                                              workdir: Path) -> None:
    result = await run_latency(database, database, servers.bootstrap_servers, workdir, rates=[100], seconds=2,
                               connections=2, topic=topic)

    (run,) = result["runs"]
    assert run["written"] == 200
    assert run["delivered"] == run["written"]
    assert result["verified"] >= run["written"] and result["rejected"] == 0
    assert run["p50_ms"] is not None and run["max_ms"] >= run["p99_ms"] >= run["p50_ms"]
    # every stage's timestamps were found for every insert (a fifth of the transactions are updates)
    assert run["breakdown"]["events"] == run["written"] * 4 // 5
    assert run["store_rows_per_event"] > 0  # read from Postgres's statistics
    assert run["cdc_peak_rss_mb"] > 0 and run["publisher_peak_rss_mb"] > 0


def test_latency_by_window_sorts_each_change_into_the_ten_seconds_it_was_committed_in() -> None:
    committed = {1: 100.0, 2: 105.0, 3: 112.0, 4: 131.0}
    arrivals = {1: 100.010, 2: 105.030, 3: 112.500, 4: 131.002}

    assert windowed_p99(committed, arrivals, start=100.0) == [30.0, 500.0, None, 2.0]


async def test_the_receiver_counts_only_webhooks_standardwebhooks_verifies() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    body = orjson.dumps({"entityId": "7", "operationType": "created", "data": {"value": {}}})
    now = datetime.now(UTC)
    signed = {"webhook-id": "msg_1", "webhook-timestamp": str(int(now.timestamp())),
              "webhook-signature": Webhook(secret).sign("msg_1", now, body)}
    forged = {**signed, "webhook-id": "msg_2"}

    async with TimingReceiver() as receiver, aiohttp.ClientSession() as http:
        receiver.secret = secret
        answers = []
        for headers in (signed, forged, signed):
            async with http.post(receiver.url, data=body, headers=headers) as response:
                answers.append(response.status)

    assert answers == [204, 401, 204]
    assert (receiver.verified, receiver.rejected, receiver.duplicates) == (2, 1, 1)
    assert list(receiver.arrivals) == [7]


def test_memory_benchmark_counts_every_event_of_one_transaction(servers: Servers, database: str, topic: str,
                                                                workdir: Path) -> None:
    result = run_memory(database, servers.bootstrap_servers, workdir, rows=5000, topic=topic, timeout=120)

    assert result["events_in_kafka"] == 5000
    assert result["peak_rss_mb"] > 0 and result["rss_samples"] > 0
