"""A row moved to another organization, on the real stack: each organization sees only its own side.

The old organization gets a ``deleted`` event with its last view of the row; the new one gets a
``created`` event with no old row, then the row's later changes. Nothing the row held under the
old organization reaches the new one.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from models.events import ChangeEvent
from publisher.store import Store
from tests.conftest import Servers
from tests.support import COMMENTS_ENTITY, COMMENTS_TABLE, capture_and_publisher, wait_for, write_config
from walhook.receiver import VerifyingReceiver


async def test_a_moved_row_is_deleted_for_the_old_organization_and_created_for_the_new_one(
        servers: Servers, database: str, topic: str, workdir: Path) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(COMMENTS_TABLE)
    config = write_config(workdir / "walhook.toml", database, servers.bootstrap_servers, topic, COMMENTS_ENTITY)
    async with VerifyingReceiver() as receiver, Store(database) as store:
        for organization in ("acme", "globex"):
            receiver.secrets[organization] = await store.add_organization(organization)
            await store.add_integration(organization, receiver.url_for(organization), ["flows/comments:*"])
        async with capture_and_publisher(config, workdir, database, servers.bootstrap_servers, topic):
            with psycopg.connect(database, autocommit=True) as conn:
                conn.execute("INSERT INTO packet_comments (organization_id, packet_id, content) "
                             "VALUES ('acme', 7, 'acme-only draft')")
                conn.execute("UPDATE packet_comments SET organization_id = 'globex', content = 'handed over' "
                             "WHERE id = 1")
                conn.execute("UPDATE packet_comments SET content = 'globex edit' WHERE id = 1")
            await wait_for(lambda: len(receiver.received) >= 4, what="four webhooks")
    assert receiver.rejected == []
    acme = [ChangeEvent.model_validate(hook.event) for hook in receiver.received if hook.organization == "acme"]
    globex = [hook for hook in receiver.received if hook.organization == "globex"]
    assert [(e.operation_type, e.organization_id) for e in acme] == [("created", "acme"), ("deleted", "acme")]
    gone = acme[1]
    assert gone.data.value is None and gone.data.old_value is not None
    assert gone.data.old_value.properties["content"] == "acme-only draft"
    created, updated = (ChangeEvent.model_validate(hook.event) for hook in globex)
    assert (created.operation_type, updated.operation_type) == ("created", "updated")
    assert created.organization_id == updated.organization_id == "globex"
    assert created.data.old_value is None and created.data.update_mask is None
    assert created.data.value is not None and created.data.value.properties["content"] == "handed over"
    assert all(b"acme" not in hook.body for hook in globex)  # neither the old content nor the old organization
    assert created.event_id == gone.event_id + "_moved" and created.transaction == gone.transaction
