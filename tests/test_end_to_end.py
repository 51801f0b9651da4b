"""The walking skeleton's promise, on the real stack: row change -> Kafka -> signed webhook.

``walhook cdc`` and ``walhook publisher`` run as separate processes from a config file; the
receiver on 127.0.0.1 verifies every request with the ``standardwebhooks`` library.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from models.events import ChangeEvent
from publisher.store import Store
from tests.conftest import Servers
from tests.support import COMMENTS_ENTITY, COMMENTS_TABLE, capture_and_publisher, wait_for, write_config
from walhook.receiver import VerifyingReceiver


async def test_insert_update_delete_arrive_as_three_verified_webhooks(
        servers: Servers, database: str, topic: str, workdir: Path) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(COMMENTS_TABLE)
    config = write_config(workdir / "walhook.toml", database, servers.bootstrap_servers, topic, COMMENTS_ENTITY)
    async with VerifyingReceiver() as receiver, Store(database) as store:
        receiver.secrets["acme"] = await store.add_organization("acme")
        receiver.secrets["globex"] = await store.add_organization("globex")
        await store.add_integration("acme", receiver.url_for("acme"), ["flows/comments:*"])
        await store.add_integration("globex", receiver.url_for("globex"), ["flows/comments:*"])
        async with capture_and_publisher(config, workdir, database, servers.bootstrap_servers, topic):
            with psycopg.connect(database, autocommit=True) as conn:
                conn.execute("INSERT INTO packet_comments (organization_id, packet_id, content, secret_note) "
                             "VALUES ('acme', 7, 'Looks good', 'hidden')")
                conn.execute("INSERT INTO packet_comments (organization_id, packet_id, content) "
                             "VALUES ('globex', 9, 'Other tenant')")
                conn.execute("UPDATE packet_comments SET content = 'Looks great' WHERE id = 1")
                conn.execute("DELETE FROM packet_comments WHERE id = 1")
            await wait_for(lambda: len(receiver.received) >= 4, what="four webhooks")
            await asyncio.sleep(0.5)  # anything extra would arrive now

    assert receiver.rejected == []
    acme = [hook for hook in receiver.received if hook.organization == "acme"]
    globex = [hook for hook in receiver.received if hook.organization == "globex"]
    assert [hook.event["operationType"] for hook in acme] == ["created", "updated", "deleted"]
    assert [hook.event["entityPath"] for hook in globex] == ["pipelinesPackets/9/comments/2"]
    assert all(hook.event["organizationId"] == "acme" for hook in acme)

    created, updated, deleted = (ChangeEvent.model_validate(hook.event) for hook in acme)
    assert created.entity_path == "pipelinesPackets/7/comments/1"
    assert created.collection_path == "pipelinesPackets/7/comments"
    assert created.entity_id == "1" and created.entity_key == "flows/comments"
    assert created.data.value is not None and created.data.old_value is None and created.data.update_mask is None
    assert created.data.value.properties["content"] == "Looks good"
    assert "secret_note" not in created.data.value.properties  # excluded columns never leave the process
    assert created.data.value.create_time == created.data.value.properties["created_at"]

    assert updated.data.update_mask == ["content"]
    assert updated.data.old_value is not None and updated.data.value is not None
    assert updated.data.old_value.properties["content"] == "Looks good"
    assert updated.data.value.properties["content"] == "Looks great"
    assert {k: v for k, v in updated.data.value.properties.items() if k != "content"} == \
        {k: v for k, v in updated.data.old_value.properties.items() if k != "content"}

    assert deleted.data.value is None and deleted.data.update_mask is None
    assert deleted.data.old_value is not None
    assert deleted.data.old_value.properties["content"] == "Looks great"

    ids = [hook.webhook_id for hook in acme]
    assert len(set(ids)) == 3
    assert all(hook.webhook_id.startswith(hook.event["eventId"]) for hook in receiver.received)
    # The body on the wire is the event exactly: the seed's fields in order, then walhook's two.
    assert list(acme[0].event) == ["eventTimestamp", "operationType", "entityPath", "entityId", "entityKey",
                                   "collectionPath", "organizationId", "data", "eventId", "transaction"]


@pytest.mark.parametrize("bad", ["flows/comments:created,exploded", ":created"])
async def test_bad_subscription_is_refused_with_its_text(database: str, bad: str) -> None:
    from publisher.errors import SubscriptionError

    async with Store(database) as store:
        await store.add_organization("acme")
        with pytest.raises(SubscriptionError, match="subscription"):
            await store.add_integration("acme", "http://127.0.0.1:1/hook", [bad])
