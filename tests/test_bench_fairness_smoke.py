"""Smoke version of the fairness benchmark (bench/fairness.py).

Its core runs against the session's stack with tiny sizes, so the script cannot rot unnoticed. It
checks that every quiet change arrived in both phases and that the noisy organization's load was
really there (connections held open at its endpoints, its conditions at the budget), never how fast:
the machine running the tests may be busy with anything.
"""

from __future__ import annotations

from pathlib import Path

from bench.fairness import run_fairness
from bench.fairness_phases import by_second
from tests.conftest import Servers

HANGING = 3  # 8 requests in flight each: 24 connections, under the per-organization cap


async def test_fairness_benchmark_delivers_every_quiet_change_beside_a_noisy_organization(
        servers: Servers, database: str, topic: str, workdir: Path) -> None:
    result = await run_fairness(database, database, servers.bootstrap_servers, workdir, seconds=2, quiet_rate=50,
                                noisy_rate=100, hanging=HANGING, topic=topic, warmup=10)

    assert result["complete"]
    for phase in (result["alone"], result["beside_noisy"]):
        assert phase["written"] == 100 and phase["delivered"] == phase["written"]
        assert phase["max_ms"] >= phase["p99_ms"] >= phase["p50_ms"]
    assert result["rejected"] == 0 and result["verified"] >= 200
    noisy, load = result["noisy"], result["beside_noisy"]["noisy_load"]
    assert noisy["one_more_refused"] and noisy["budget"] - noisy["condition_cost"] < 101  # the budget is full
    assert load["hanging"]["open_at_start"] == load["hanging"]["expected"] == HANGING * 8
    assert load["hanging"]["integrations_reached"] == HANGING
    assert load["written"] == 100 * 12  # the quiet phase's 2 s and the 10 s warm-up
    assert load["filtered_by_each_heavy_condition"] > 0  # the heavy conditions ran on the noisy changes
    assert set(result["added_ms"]) == {"p50_ms", "p99_ms", "max_ms"}
    # every quiet insert was found at each stage: in the topic, in the store's attempts, at the receiver
    assert result["beside_noisy"]["stages"]["events"] == 100 * 4 // 5


def test_the_longest_delay_of_each_second_counts_a_quiet_second_as_zero() -> None:
    committed = {1: 100.0, 2: 100.5, 3: 102.2}
    arrivals = {1: 100.010, 2: 100.520, 3: 102.300}

    assert by_second(committed, arrivals, start=100.0) == [20, 0, 100]
