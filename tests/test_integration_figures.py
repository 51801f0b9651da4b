"""The portal's figures per integration on a real store: its deliveries of the last 24 hours by status and its
backlog. They are counted from the organization's deliveries by time (no index reads an integration's deliveries
by time, migration 87), so another organization's deliveries, older ones and an integration with none must each
come out right."""

from __future__ import annotations

from datetime import timedelta

import psycopg

from publisher.store import AttemptRecord, NewDelivery, Store, utcnow

URL = "http://127.0.0.1:9/hook"


def _attempt(integration: int, organization: str, n: int, outcome: str) -> AttemptRecord:
    """A live delivery's first attempt that left it ``outcome`` (succeeded, failed for good, or pending)."""
    new = NewDelivery(integration, organization, f"evt_{n}", f"evt_{n}_i{integration}", "docs", f"docs/{n}",
                      "created", b"{}", 0, n)
    retry = utcnow() + timedelta(minutes=5) if outcome == "pending" else None
    return AttemptRecord(0, integration, 1, "scheduled", utcnow(), URL, {}, 204 if outcome == "succeeded" else 500,
                         {}, b"", 3.0, None if outcome == "succeeded" else "HTTP 500", outcome, retry, live=new)


def _age(database: str, integration: int, event_ids: list[str]) -> None:
    """Make these deliveries a day and an hour old."""
    with psycopg.connect(database) as conn:
        conn.execute("UPDATE walhook.deliveries SET created_at = now() - interval '25 hours' "
                     "WHERE integration_id = %s AND event_id = ANY(%s)", [integration, event_ids])


async def test_each_integration_counts_its_own_deliveries_of_the_last_day(database: str) -> None:
    async with Store(database) as store:
        for organization in ("acme", "other"):
            await store.add_organization(organization)
        busy, quiet, idle = [await store.add_integration("acme", URL, ["*"]) for _ in range(3)]
        elsewhere = await store.add_integration("other", URL, ["*"])
        outcomes = ["succeeded"] * 5 + ["failed", "pending", "pending"]
        await store.log_first_attempts([_attempt(busy, "acme", n, outcome) for n, outcome in enumerate(outcomes)])
        await store.log_first_attempts([_attempt(quiet, "acme", 0, "succeeded"),
                                        *(_attempt(elsewhere, "other", n, "failed") for n in range(4))])
        _age(database, busy, ["evt_0", "evt_1", "evt_7"])  # two succeeded and a pending one: its backlog still
        figures = await store.integration_figures("acme")
        others = await store.integration_figures("other")
    counted = {integration: (f.succeeded, f.failed, f.pending) for integration, f in figures.items()}
    assert counted == {busy: (3, 1, 2), quiet: (1, 0, 0), idle: (0, 0, 0)}
    assert (others[elsewhere].succeeded, others[elsewhere].failed, others[elsewhere].pending) == (0, 4, 0)
    assert figures[busy].last_status in (204, 500) and figures[idle].last_status is None
