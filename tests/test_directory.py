"""The integration directory's candidates for a live event: only those subscribed to its key and operation,
kept in step with every change of the organization's integrations (real store)."""

from __future__ import annotations

import asyncio

import orjson

from publisher.routing.candidates import route_candidates
from publisher.routing.directory import IntegrationDirectory
from publisher.routing.recipients import parse_event, route
from publisher.store import Store
from tests.test_delivery import event

SEQ_IS_ONE = {"subscription": "docs:updated", "when": {"property": "seq", "equals": 1}}


def ids_of(integrations: list) -> list[int]:  # type: ignore[type-arg]
    return [integration.id for integration in integrations]


def id_set(integrations: list) -> set[int]:  # type: ignore[type-arg]
    return {integration.id for integration in integrations}


async def test_candidates_are_the_subscribed_integrations_and_route_as_all_of_them(database: str) -> None:
    async with Store(database) as store:
        await store.add_organization("acme")
        docs = await store.add_integration("acme", "http://127.0.0.1:9/a", ["docs:*"])
        other = await store.add_integration("acme", "http://127.0.0.1:9/b", ["notes:*"])
        created_only = await store.add_integration("acme", "http://127.0.0.1:9/c", ["d*:created"])
        conditioned = await store.add_integration("acme", "http://127.0.0.1:9/d", [SEQ_IS_ONE])
        directory = IntegrationDirectory(store)
        await directory.load(asyncio.Event())
        assert id_set(directory.candidates("acme", "docs", "updated").integrations) == {docs, conditioned}
        assert id_set(directory.candidates("acme", "docs", "created").integrations) == {docs, created_only}
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
        assert id_set(directory.candidates("acme", "docs", "updated").integrations) == {first, second}
        await store.set_enabled(first, False, "paused")
        await directory.refresh(full=True)
        assert ids_of(directory.candidates("acme", "docs", "updated").integrations) == [second]
        third = await store.add_integration("acme", "http://127.0.0.1:9/c", ["docs:updated"])
        await directory.refresh(full=True)
        assert id_set(directory.candidates("acme", "docs", "updated").integrations) == {second, third}


async def test_a_full_reload_compiles_only_what_changed_and_many_off_the_event_loop(database: str,
                                                                                   monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Reported: past 4,096 distinct conditions the compile cache thrashed, and every full reload compiled
    them all again on the event loop (45 s with delivery stalled)."""
    import threading

    import publisher.store.integrations as integrations_module

    compiled_in: list[str] = []
    parse = integrations_module.parse_items

    def counting(items):  # type: ignore[no-untyped-def]
        compiled_in.append(threading.current_thread().name)
        return parse(items)

    async with Store(database) as store:
        await store.add_organization("acme")
        ids = [await store.add_integration("acme", "http://127.0.0.1:9/a", [
            {"subscription": "docs:updated", "when": {"property": "n", "equals": n}}]) for n in range(60)]
        monkeypatch.setattr(integrations_module, "parse_items", counting)
        directory = IntegrationDirectory(store)
        await directory.load(asyncio.Event())
        assert len(compiled_in) == 60 and threading.main_thread().name not in compiled_in  # off the loop
        before = {i: directory.get(i).subscriptions for i in ids}  # type: ignore[union-attr]
        compiled_in.clear()
        await store.update_integration("acme", ids[0], {"events": [{"subscription": "docs:updated",
                                                            "when": {"property": "n", "equals": -1}}]})
        compiled_in.clear()  # (the update checked its subscription)
        await directory.refresh(full=True)
        assert compiled_in and threading.main_thread().name not in compiled_in  # one condition: off the loop too
        assert len(compiled_in) == 1  # only the one that changed
        assert all(directory.get(i).subscriptions is before[i] for i in ids[1:])  # type: ignore[union-attr]
        assert directory.get(ids[0]).subscriptions is not before[ids[0]]  # type: ignore[union-attr]
