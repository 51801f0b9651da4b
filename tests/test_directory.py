"""The integration directory's candidates for a live event: only those subscribed to its key and operation,
kept in step with every change of the organization's integrations (real store)."""

from __future__ import annotations

import asyncio

import orjson

from publisher.candidates import route_candidates
from publisher.directory import IntegrationDirectory
from publisher.routing import parse_event, route
from publisher.store import Store
from tests.test_delivery import event

SEQ_IS_ONE = {"subscription": "docs:updated", "when": {"property": "seq", "equals": 1}}


def ids_of(integrations: list) -> list[int]:  # type: ignore[type-arg]
    return [integration.id for integration in integrations]


async def test_candidates_are_the_subscribed_integrations_and_route_as_all_of_them(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        docs = await store.add_integration("acme", "http://127.0.0.1:9/a", ["docs:*"])
        other = await store.add_integration("acme", "http://127.0.0.1:9/b", ["notes:*"])
        created_only = await store.add_integration("acme", "http://127.0.0.1:9/c", ["d*:created"])
        conditioned = await store.add_integration("acme", "http://127.0.0.1:9/d", [SEQ_IS_ONE])
        directory = IntegrationDirectory(store)
        await directory.load(asyncio.Event())
        assert ids_of(directory.candidates("acme", "docs", "updated").integrations) == [docs, conditioned]
        assert ids_of(directory.candidates("acme", "docs", "created").integrations) == [docs, created_only]
        assert ids_of(directory.candidates("acme", "notes", "updated").integrations) == [other]
        assert directory.candidates("acme", "tasks", "updated").integrations == []
        assert directory.candidates("nobody", "docs", "updated").integrations == []
        assert "nobody" not in directory._subscribed  # organization ids come from records: none kept for unknown ones
        for seq in (0, 1):  # the condition filters the first out and lets the second through
            fields = parse_event(orjson.dumps(event(seq + 1, seq=seq)))
            narrow = route(directory.candidates("acme", "docs", "updated").integrations, fields)
            assert narrow == route(directory.enabled_of("acme"), fields)
            assert route_candidates(directory.candidates("acme", "docs", "updated"), fields) == narrow  # the index
            assert ids_of(narrow.filtered) == ([conditioned] if seq == 0 else [])


async def test_candidates_follow_changes_of_the_organizations_integrations(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        first = await store.add_integration("acme", "http://127.0.0.1:9/a", ["docs:*"])
        second = await store.add_integration("acme", "http://127.0.0.1:9/b", ["notes:*"])
        directory = IntegrationDirectory(store)
        await directory.load(asyncio.Event())
        assert ids_of(directory.candidates("acme", "docs", "updated").integrations) == [first]
        await store.update_integration("acme", second, {"events": ["docs:updated"]})
        await directory.refresh(full=True)
        assert ids_of(directory.candidates("acme", "docs", "updated").integrations) == [first, second]
        await store.set_enabled(first, False, "paused")
        await directory.refresh(full=True)
        assert ids_of(directory.candidates("acme", "docs", "updated").integrations) == [second]
        third = await store.add_integration("acme", "http://127.0.0.1:9/c", ["docs:updated"])
        await directory.refresh(full=True)
        assert ids_of(directory.candidates("acme", "docs", "updated").integrations) == [second, third]
