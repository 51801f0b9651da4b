"""The recorder's batched writes, against a real store, with another publisher's poller in between each
statement: whatever it can see at any moment must already respect the entity order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from publisher.settling.recorder import Recorder
from publisher.store import Delivery, NewDelivery, Store


class PolledStore(Store):
    """A store where a poller claims what is due after every statement the recorder runs."""

    claimed: list[Delivery]
    _polling = False

    async def _binary(self, sql: str, params: Sequence[Any], what: str) -> list[tuple[Any, ...]]:
        rows = await super()._binary(sql, params, what)
        if not self._polling:
            self._polling = True
            try:
                self.claimed.extend(await self.claim_due(10, timedelta(minutes=1)))
            finally:
                self._polling = False
        return rows


def change(integration: int, offset: int) -> NewDelivery:
    return NewDelivery(integration, "acme", f"evt_{offset}", f"evt_{offset}_i{integration}", "docs", "docs/x",
                       "updated", b"{}", 0, offset)


async def test_a_later_change_is_never_due_before_earlier_ones_held_in_the_same_flush(database: str) -> None:
    """Two changes of an entity still in this publisher's lane are parked behind it (held); the entity's lane
    then empties and a third change is parked plainly, due at once. A poller looking between any two
    statements of the flush must not find the third before the first two are released."""
    async with PolledStore(database) as store:
        store.claimed = []
        await store.add_organization("acme")
        integration = await store.add_integration("acme", "http://127.0.0.1:9/a", ["*"])
        recorder = Recorder(store)
        recorder.park(change(integration, 5), behind=True)
        recorder.park(change(integration, 6), behind=True)
        recorder.park(change(integration, 7))  # the entity had nothing left in the lane by then
        await recorder.flush()
        assert store.claimed == []  # held ones are never due on their own, and the third waits behind them
        recorder.free((integration, "docs/x"))
        await recorder.flush()  # releases the held ones: the poller takes the first, and only it
        assert [d.webhook_id for d in store.claimed] == [f"evt_5_i{integration}"]
