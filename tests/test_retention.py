"""The delivery log's retention on a real store: day partitions dropped whole, settled deliveries deleted,
pending ones and failures within their longer retention kept, the log's size reported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from publisher.store import AttemptRecord, NewDelivery, Store
from publisher.store.retention import expired_days, partition_name

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def test_a_day_partition_expires_once_its_last_row_is_older_than_the_retention() -> None:
    names = [partition_name("succeeded", (NOW - timedelta(days=n)).date()) for n in (9, 8, 7, 6)]
    names += [partition_name("failed", (NOW - timedelta(days=n)).date()) for n in (31, 9)]
    expired = expired_days(names, NOW, {"succeeded": timedelta(days=7), "failed": timedelta(days=30)})
    # The day 7 days ago still holds rows younger than 7 days (its afternoon); 8 days ago is entirely older.
    assert expired == sorted([names[0], names[1], names[4]])


def _delivery(integration: int, n: int) -> NewDelivery:
    return NewDelivery(integration, "acme", f"evt_{n}", f"evt_{n}_i{integration}", "docs", f"docs/{n}", "created",
                       b'{"n": %d}' % n, 0, n)


def _attempt(delivery_id: int, integration: int, started: datetime, status: str) -> AttemptRecord:
    return AttemptRecord(delivery_id, integration, 1, "scheduled", started, "http://127.0.0.1:9/x",
                         {"webhook-id": "x"}, 204 if status == "succeeded" else 500, {}, b"", 3.0,
                         None if status == "succeeded" else "HTTP 500", status, None)


async def test_pruning_drops_old_partitions_and_settled_deliveries_only(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        integration = await store.add_integration("acme", "http://127.0.0.1:9/x", ["*"])
        old, recent = NOW - timedelta(days=10), NOW - timedelta(hours=1)
        await store.ensure_partitions([old.date(), recent.date()])
        created = await store.create_deliveries([_delivery(integration, n) for n in range(5)], timedelta(0))
        ids = [d.id for d in created]
        # 0: succeeded 10 days ago; 1: failed 10 days ago; 2: pending since 10 days ago; 3: succeeded now;
        # 4: succeeded 10 days ago, logged in the default partition (no day partition of its own).
        await store.record_attempts([_attempt(ids[0], integration, old, "succeeded"),
                                     _attempt(ids[1], integration, old, "failed"),
                                     _attempt(ids[2], integration, old, "pending"),
                                     _attempt(ids[3], integration, recent, "succeeded"),
                                     _attempt(ids[4], integration, old - timedelta(days=30), "succeeded")])
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("UPDATE walhook.deliveries SET updated_at = %s WHERE id = ANY(%s)",
                         [old, [ids[0], ids[1], ids[2], ids[4]]])
            in_default = conn.execute("SELECT count(*) FROM walhook.attempts_succeeded_default").fetchone()
        assert in_default == (1,)
        before = await store.log_size()
        pruned = await store.prune(timedelta(days=7), timedelta(days=30), batch=1, now=NOW)
        assert pruned.partitions_dropped == (partition_name("succeeded", old.date()),)
        assert pruned.attempts_deleted == 1 and pruned.deliveries_deleted == 2
        left = {d.id: d.status for d in await store.deliveries(limit=10)}
        assert left == {ids[1]: "failed", ids[2]: "pending", ids[3]: "succeeded"}
        assert [a.response_status for a in await store.attempts_of(ids[1])] == [500]  # failures kept 30 days
        assert partition_name("succeeded", old.date()) not in await store.attempt_partitions()
        # The re-read of a kept event is still idempotent; a pruned one would be recorded again.
        again = await store.create_deliveries([_delivery(integration, 1), _delivery(integration, 3)], timedelta(0))
        assert again == []
        after = await store.log_size()
        assert after.attempt_partitions == before.attempt_partitions - 1 and before.total_bytes > 0


async def test_a_late_partition_takes_the_rows_already_in_the_default(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        integration = await store.add_integration("acme", "http://127.0.0.1:9/x", ["*"])
        (delivery,) = await store.create_deliveries([_delivery(integration, 1)], timedelta(0))
        await store.record_attempts([_attempt(delivery.id, integration, NOW, "succeeded")])
        assert await store.ensure_partitions([NOW.date()]) == [partition_name("succeeded", NOW.date()),
                                                               partition_name("failed", NOW.date())]
        with psycopg.connect(database, autocommit=True) as conn:
            name = partition_name("succeeded", NOW.date())
            assert conn.execute(f"SELECT count(*) FROM walhook.{name}").fetchone() == (1,)
            assert conn.execute("SELECT count(*) FROM walhook.attempts_succeeded_default").fetchone() == (0,)
        assert await store.ensure_partitions([NOW.date()]) == []
        assert len(await store.attempts_of(delivery.id)) == 1
