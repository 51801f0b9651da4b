"""The store on a real database: migrations, secrets, and the claim rules."""

from __future__ import annotations

from datetime import timedelta

import pytest

from models.errors import NotFound, SecretError
from models.migrations import MIGRATIONS, migrate
from publisher.store import NewDelivery, Store


async def test_migrations_are_versioned_and_idempotent(database: str) -> None:
    async with Store(database) as store:
        assert await migrate(store.engine, store.schema) == max(v for v, _ in MIGRATIONS)  # second run: nothing to do
        rows = await store._rows("SELECT version FROM {s}.schema_migrations ORDER BY version")
    assert [row["version"] for row in rows] == sorted(version for version, _ in MIGRATIONS)


async def test_an_integrations_own_secret_overrides_the_organizations(database: str) -> None:
    async with Store(database) as store:
        org_secret = await store.add_organization("acme")
        first = await store.add_integration("acme", "http://127.0.0.1:9/a", ["*"])
        second = await store.add_integration("acme", "http://127.0.0.1:9/b", ["*"])
        own = await store.rotate_secret("acme", integration_id=first)
        assert (await store.integration(first)).secrets == [own, org_secret]  # the organization's, for the overlap
        assert (await store.integration(second)).secrets == [org_secret]
        newest = await store.rotate_secret("acme", integration_id=first, overlap=timedelta(0))
        assert (await store.integration(first)).secrets == [newest]
        assert (await store.integration(second)).secrets == [org_secret]


async def test_rotation_overlap_then_expiry(database: str) -> None:
    async with Store(database) as store:
        old = await store.add_organization("acme")
        integration = await store.add_integration("acme", "http://127.0.0.1:9/a", ["*"])
        new = await store.rotate_secret("acme", overlap=timedelta(hours=1))
        assert (await store.integration(integration)).secrets == [new, old]
        newest = await store.rotate_secret("acme", overlap=timedelta(0))
        assert (await store.integration(integration)).secrets == [newest]


async def test_bad_input_is_refused_with_a_reason(database: str) -> None:
    async with Store(database) as store:
        with pytest.raises(SecretError):
            await store.add_organization("acme", secret="whsec_!!!")
        with pytest.raises(NotFound, match="organization 'ghost' does not exist"):
            await store.add_integration("ghost", "http://127.0.0.1:9/a", ["*"])
        with pytest.raises(NotFound, match="delivery 42 does not exist"):
            await store.redeliver(42)


async def test_claims_respect_entity_order_and_are_exclusive(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        integration = await store.add_integration("acme", "http://127.0.0.1:9/a", ["*"])
        new = [NewDelivery(integration, "acme", f"evt_{n}", f"evt_{n}_i{integration}", "docs", path, "updated", b"{}")
               for n, path in ((1, "docs/x"), (2, "docs/x"), (3, "docs/y"))]
        assert await store.waiting_entities([(integration, "docs/x")]) == set()
        created = await store.create_deliveries(new, timedelta(0))
        assert len(created) == 3
        again = await store.create_deliveries(new, timedelta(0))
        assert again == []  # the same event twice is one delivery
        claimed = await store.claim_due(10, timedelta(minutes=1))
        assert sorted(d.webhook_id for d in claimed) == [f"evt_1_i{integration}", f"evt_3_i{integration}"]
        assert await store.claim_due(10, timedelta(minutes=1)) == []  # claimed: nobody else gets them
        assert await store.waiting_entities([(integration, "docs/x"), (integration, "docs/z")]) == {
            (integration, "docs/x")}  # a live change of docs/x must wait behind them


async def test_a_delivery_held_behind_an_earlier_change_is_never_due_on_its_own(database: str) -> None:
    """Parked behind a change still in a publisher's memory: only that publisher releases it; recording the
    same record again (its partition read anew, the earlier change first) takes it over, whether or not its
    claim has run out (a publisher killed a moment ago still has a claim of up to a minute)."""
    async with Store(database) as store:
        await store.add_organization("acme")
        integration = await store.add_integration("acme", "http://127.0.0.1:9/a", ["*"])
        later = NewDelivery(integration, "acme", "evt_9", f"evt_9_i{integration}", "docs", "docs/x", "updated", b"{}",
                            0, 9)
        (held,) = await store.park([], behind=[later], hold_for=timedelta(0))  # its claim ends at once
        assert await store.claim_due(10, timedelta(minutes=1)) == []  # an expired claim does not free it
        assert await store.waiting_entities([(integration, "docs/x")]) == {(integration, "docs/x")}
        await store.park([later])  # the record read again by the next owner: taken over, due now
        (due,) = await store.claim_due(10, timedelta(minutes=1))
        assert due.id == held.id
        again = NewDelivery(integration, "acme", "evt_10", f"evt_10_i{integration}", "docs", "docs/y", "updated",
                            b"{}", 0, 10)
        (kept,) = await store.park([], behind=[again], hold_for=timedelta(minutes=1))
        assert await store.claim_due(10, timedelta(minutes=1)) == []
        await store.park([again])  # read again while its claim runs: taken over all the same
        assert [d.id for d in await store.claim_due(10, timedelta(minutes=1))] == [kept.id]
        await store.release_held([kept.id])  # its first publisher lets go of it later: changes nothing
        assert await store.claim_due(10, timedelta(minutes=1)) == []


async def test_a_later_change_parked_with_earlier_held_ones_waits_behind_them(database: str) -> None:
    """Held and plain waiting deliveries of one flush are one statement: the later change, due at once, is
    never in the store without the earlier ones it must wait behind (a poller used to take it in between)."""
    async with Store(database) as store:
        await store.add_organization("acme")
        integration = await store.add_integration("acme", "http://127.0.0.1:9/a", ["*"])
        earlier, later = (NewDelivery(integration, "acme", f"evt_{n}", f"evt_{n}_i{integration}", "docs", "docs/x",
                                      "updated", b"{}", 0, n) for n in (5, 6))
        (held,) = await store.park([later], behind=[earlier])
        assert await store.claim_due(10, timedelta(minutes=1)) == []
        await store.release_held([held.id])
        assert [d.id for d in await store.claim_due(10, timedelta(minutes=1))] == [held.id]


async def test_integration_ids_tell_no_organization_how_many_the_others_have(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        await store.add_organization("globex")
        acme = [await store.add_integration("acme", f"http://127.0.0.1:9/{n}", ["*"]) for n in range(6)]
        globex = await store.add_integration("globex", "http://127.0.0.1:9/g", ["*"])
        ids = [*acme, globex]
        assert all(10**8 <= i < 10**9 for i in ids)  # drawn, not counted: 1, 2, ... 7 before
        assert sorted(ids) != ids or max(ids) - min(ids) > 100  # neither in creation order nor close together
        listed = await store.integrations_of("acme")
        assert [integration.id for integration in listed] == acme  # still listed in creation order


async def test_a_drawn_integration_id_that_is_taken_is_drawn_again(database: str) -> None:
    from models.errors import Conflict

    async with Store(database) as store:
        await store.add_organization("acme")
        taken = await store.add_integration("acme", "http://127.0.0.1:9/a", ["*"])
        await store._rows(f"ALTER TABLE {{s}}.integrations ALTER COLUMN id SET DEFAULT {taken}")  # every draw hits it
        try:
            with pytest.raises(Conflict, match="no free integration id"):
                await store.add_integration("acme", "http://127.0.0.1:9/b", ["*"])
            with pytest.raises(Conflict, match="already has 1 integrations"):  # a full organization says so
                await store.add_integration("acme", "http://127.0.0.1:9/b", ["*"], limit=1)
        finally:
            await store._rows("ALTER TABLE {s}.integrations ALTER COLUMN id "
                              "SET DEFAULT (100000000 + floor(random() * 900000000))::bigint")
        assert [i.url for i in await store.integrations_of("acme")] == ["http://127.0.0.1:9/a"]
