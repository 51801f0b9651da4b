"""The integration page's "only when" rows and sample "as if", through the ASGI test client on a real store.

The source table is real (its columns type the rows' values and the checks); the sample goes to
a receiver on 127.0.0.1 that verifies the signature with ``standardwebhooks``.
"""

from __future__ import annotations

import asyncio
import html
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from typing import Any

import orjson
import psycopg
import pytest
from starlette.testclient import TestClient

from control.api.app import create_app
from models.settings import Settings
from tests.portal_support import ADMIN, DOCS, organization, signed_in
from walhook.receiver import VerifyingReceiver

SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtY29uZGl0aW9uLXRlc3RzLTEy"
APPROVED = {"subscription": "docs:updated", "when": {"property": "status", "from": "review", "to": "approved"}}


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id serial PRIMARY KEY, org text NOT NULL, status text, points int)")
    settings = Settings(store={"dsn": database, "plaintext_secrets": True}, source={"dsn": database},
                        api={"admin_token": ADMIN}, publisher={"allowed_networks": ["127.0.0.1/32"]}, entities=[DOCS])
    with TestClient(create_app(settings)) as test_client:
        yield test_client


class _Fields(HTMLParser):
    """The fields a browser would submit with the integration form (its inputs, selects and textareas)."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self._in_form = self._select = self._textarea = None  # type: ignore[assignment]
        self._first: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form":
            self._in_form = found.get("id") == "integration-form"  # type: ignore[assignment]
        if not self._in_form or "disabled" in found:
            return
        name = found.get("name")
        if tag == "input" and name and (found.get("type") != "checkbox" or "checked" in found):
            self.fields.append((name, found.get("value") or ""))
        elif tag == "select" and name:
            self._select, self._first = name, None  # type: ignore[assignment]
        elif tag == "option" and self._select is not None:
            value = found.get("value")
            if self._first is None:
                self._first = value
            if "selected" in found:
                self.fields.append((self._select, value if value is not None else "\0text"))
                self._select = None
        elif tag == "textarea" and name:
            self._textarea = name  # type: ignore[assignment]
            self.fields.append((name, ""))

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self.fields[-1] = (self._textarea, self.fields[-1][1] + data)
        if self.fields and self.fields[-1][1] == "\0text":
            self.fields[-1] = (self.fields[-1][0], data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self._select is not None:  # nothing selected: the first option
            self.fields.append((self._select, self._first or ""))
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "form":
            self._in_form = False  # type: ignore[assignment]


def form_fields(page: str) -> dict[str, Any]:
    """The integration form as the browser would post it (repeated names as lists)."""
    parser = _Fields()
    parser.feed(page)
    posted: dict[str, Any] = {}
    for name, value in parser.fields:
        if name == "events":
            posted.setdefault(name, []).append(value)
        else:
            posted[name] = value
    return posted


def canonical(events: list[Any]) -> list[bytes]:
    return sorted(orjson.dumps(event, option=orjson.OPT_SORT_KEYS) for event in events)


def rows_form(csrf: str, rows: list[dict[str, str]], combinator: str = "all_of", **fields: Any) -> dict[str, Any]:
    form: dict[str, Any] = {"csrf": csrf, "url": "http://127.0.0.1:9/hook", "events": ["docs:updated"],
                            "batch_size": "1", "ordering": "entity", "only:docs:combinator": combinator, **fields}
    for n, row in enumerate(rows):
        form.update({f"only:docs:{n}:{name}": value for name, value in row.items()})
    return form


def inline_error(page: str) -> str:
    found = re.search(r'<p class="error" role="alert" data-only-error="docs">([^<]*)</p>', page)
    assert found, page[-3000:]
    return html.unescape(found.group(1))


def stored(client: TestClient, key: dict[str, str]) -> list[Any]:
    (integration,) = client.get("/v1/integrations", headers=key).json()
    return client.get(f"/v1/integrations/{integration['id']}", headers=key).json()["events"]  # type: ignore[no-any-return]


def test_rows_save_as_the_json_the_api_stores_and_show_back_as_rows(client: TestClient) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    saved = client.post("/portal/o/acme/integrations", follow_redirects=False, data=rows_form(csrf, [
        {"property": "status", "operator": "from_to", "value": "review", "to": "approved"},
        {"property": "points", "operator": "in", "side": "old", "value": "1, 2"},
        {"property": "", "operator": "equals", "value": ""}], combinator="any_of"))  # a blank row says nothing
    assert saved.status_code == 303, saved.text
    when = {"any_of": [{"property": "status", "from": "review", "to": "approved"},
                       {"property": "points", "in": [1, 2], "row": "old"}]}  # typed by the int column
    assert stored(client, key) == [{"subscription": "docs:updated", "when": when}]
    page = client.get(saved.headers["location"]).text
    fields = form_fields(page)
    assert {name: value for name, value in fields.items() if name.startswith("only:")} == {
        "only:docs:combinator": "any_of", "only:docs:0:property": "status", "only:docs:0:operator": "from_to",
        "only:docs:0:side": "new", "only:docs:0:value": "review", "only:docs:0:to": "approved",
        "only:docs:1:property": "points", "only:docs:1:operator": "in", "only:docs:1:side": "old",
        "only:docs:1:value": "1, 2", "only:docs:1:to": ""}
    assert fields["other"] == "" and 'id="json-conditions"' not in page
    integration_id = saved.headers["location"].split("/")[-1].split("?")[0]
    again = client.post(f"/portal/o/acme/integrations/{integration_id}", data=fields, follow_redirects=False)
    assert again.status_code == 303 and stored(client, key) == [{"subscription": "docs:updated", "when": when}]


def test_removing_every_row_saves_the_plain_subscription(client: TestClient) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    client.post("/portal/o/acme/integrations", data=rows_form(csrf, [{"property": "status", "operator": "changed"}]))
    assert stored(client, key) == [{"subscription": "docs:updated", "when": {"changed": ["status"]}}]
    integration_id = client.get("/v1/integrations", headers=key).json()[0]["id"]
    client.post(f"/portal/o/acme/integrations/{integration_id}", data=rows_form(csrf, []))
    assert stored(client, key) == ["docs:updated"]


@pytest.mark.parametrize(("row", "words", "invalid_row"), [
    ({"property": "points", "operator": "equals", "value": "many"},
     "events[0].when.all_of[1]: property 'points' of docs (int4) is a number: it never equals the string 'many'", 1),
    ({"property": "stauts", "operator": "changed"}, "events[0].when.all_of[1]: unknown property 'stauts' of "
     "docs; known: id, org, points, status", 1),
    ({"property": "status", "operator": "from_to", "value": "x", "to": "x"},
     "events[0].when.all_of[1]: from and to are the same value, so 'status' would not have changed; use equals", 1),
    ({"property": "status", "operator": "from_to"}, "row 2: from → to needs a from value, a to value or both", None),
])
def test_an_invalid_row_gets_the_checks_message_inline_and_nothing_is_saved(
        client: TestClient, row: dict[str, str], words: str, invalid_row: int | None) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    client.post("/portal/o/acme/integrations", data=rows_form(csrf, []))
    integration_id = client.get("/v1/integrations", headers=key).json()[0]["id"]
    first = {"property": "status", "operator": "equals", "value": "approved"}
    for path in ("/portal/o/acme/integrations", f"/portal/o/acme/integrations/{integration_id}"):
        response = client.post(path, data=rows_form(csrf, [first, row]))
        assert response.status_code == 422 and inline_error(response.text) == words
        assert 'id="events-error"' not in response.text  # next to the rows, not under the events
        marked = re.findall(r'class="only-row invalid" data-row="(\d+)"', response.text)
        assert marked == ([] if invalid_row is None else [str(invalid_row)])
        assert form_fields(response.text)["only:docs:1:property"] == row["property"]  # the rows as typed
    assert stored(client, key) == ["docs:updated"] and len(client.get("/v1/integrations", headers=key).json()) == 1


def test_rows_without_a_ticked_operation_are_refused(client: TestClient) -> None:
    csrf = signed_in(client, organization(client, "acme"), "acme")
    response = client.post("/portal/o/acme/integrations", data=rows_form(
        csrf, [{"property": "status", "operator": "changed"}], events=[], other="docs:deleted"))
    assert response.status_code == 422 and inline_error(response.text) == (
        'tick at least one operation of docs for its "only when" rows')


def test_a_condition_the_rows_cannot_show_stays_json_and_survives_a_save_unchanged(client: TestClient) -> None:
    key = organization(client, "acme")
    nested = {"subscription": "docs:updated", "when": {"any_of": [
        {"all_of": [{"changed": ["status"]}, {"property": "points", "not_equals": 0}]},
        {"property": "status", "from": "review", "to": "approved"}]}}
    several = {"subscription": "docs:*", "when": {"changed": ["status", "points"]}}
    events = [nested, several, "docs:deleted"]
    created = client.post("/v1/integrations", headers=key, json={"url": "http://127.0.0.1:9/hook", "events": events})
    assert created.status_code == 201, created.text
    csrf = signed_in(client, key, "acme")
    page = client.get(f"/portal/o/acme/integrations/{created.json()['id']}").text
    fields = form_fields(page)
    assert 'id="json-conditions"' in page and not any(name.startswith("only:docs:0") for name in fields)
    assert fields["events"] == ["docs:deleted"]
    fields.update(csrf=csrf, name="renamed")
    saved = client.post(f"/portal/o/acme/integrations/{created.json()['id']}", data=fields, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    after = client.get(f"/v1/integrations/{created.json()['id']}", headers=key).json()
    assert after["name"] == "renamed" and canonical(after["events"]) == canonical(events)  # in the boxes' order


def test_add_and_remove_a_row_answer_with_the_entitys_rows(client: TestClient) -> None:
    csrf = signed_in(client, organization(client, "acme"), "acme")
    headers = {"x-csrf-token": csrf, "hx-request": "true"}
    base = rows_form(csrf, [{"property": "status", "operator": "changed"},
                            {"property": "points", "operator": "equals", "value": "3"}])
    added = client.post("/portal/o/acme/integrations/only-when", headers=headers,
                        data={**base, "only_entity": "docs", "only_action": "add"})
    assert added.status_code == 200 and "<html" not in added.text
    assert added.headers["hx-trigger"] == "only-when-changed"  # the RAW JSON box refreshes
    assert re.findall(r'data-row="(\d+)"', added.text) == ["0", "1", "2"]
    assert '<option selected>points</option>' in added.text and 'value="3"' in added.text
    removed = client.post("/portal/o/acme/integrations/only-when", headers=headers,
                          data={**base, "only_entity": "docs", "only_action": "remove", "only_row": "0"})
    assert re.findall(r'data-row="(\d+)"', removed.text) == ["0"] and 'name="only:docs:0:value" class="value" ' \
        'value="3"' in removed.text
    for options in ('<option>id</option>', '<option>org</option>', '<option>status</option>'):
        assert options in removed.text  # the table's columns
    assert client.post("/portal/o/acme/integrations/only-when", data={**base, "only_entity": "docs",
                                                                       "only_action": "add", "csrf": "x"},
                       headers={"hx-request": "true"}).status_code == 403


@contextmanager
def receiver_thread() -> Iterator[VerifyingReceiver]:
    """A verifying receiver on 127.0.0.1, served from a thread of its own (the test client is synchronous)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    receiver = VerifyingReceiver()
    asyncio.run_coroutine_threadsafe(receiver.start(), loop).result(10)
    try:
        yield receiver
    finally:
        asyncio.run_coroutine_threadsafe(receiver.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_sample_as_if_says_whether_the_conditions_would_have_let_it_through(client: TestClient) -> None:
    key = organization(client, "acme")
    csrf = signed_in(client, key, "acme")
    headers = {"x-csrf-token": csrf, "hx-request": "true"}
    with receiver_thread() as receiver:
        receiver.secrets["acme"] = SECRET
        client.post("/portal/o/acme/integrations", data=rows_form(
            csrf, [{"property": "status", "operator": "from_to", "value": "review", "to": "approved"}],
            url=receiver.url_for("acme"), secret=SECRET))
        assert stored(client, key) == [APPROVED]
        integration_id = client.get("/v1/integrations", headers=key).json()[0]["id"]
        path = f"/portal/o/acme/integrations/{integration_id}/sample"

        def sample(operation: str, new: str, old: str) -> str:
            response = client.post(path, headers=headers, data={"entity_key": "docs", "operation": operation,
                                                                 "as_if_new": new, "as_if_old": old})
            assert response.status_code == 200, response.text
            found = re.search(r'<p class="verdict [^"]+" id="sample-verdict">([^<]*)</p>', response.text)
            assert found and ">204<" in response.text, response.text
            return html.unescape(found.group(1))

        assert sample("updated", "status=approved", "status=review") == (
            "matched: the integration would have received this event")
        assert sample("updated", "status=dismissed", "status=review") == (
            "not matched: it subscribes to docs:updated, but its conditions filter this event out")
        assert sample("created", "status=approved", "") == "not matched: it does not subscribe to docs:created"
        assert sample("read", "status=approved", "") == "not matched: it does not subscribe to docs:read"
    assert len(receiver.received) == 4 and receiver.rejected == []  # sent either way, each verified
    first, second, _, read = (hit.event for hit in receiver.received)
    assert read["operationType"] == "read" and read["data"]["oldValue"] is None
    assert read["data"]["value"]["properties"]["status"] == "approved" and read["data"]["updateMask"] is None
    assert first["data"]["value"]["properties"]["status"] == "approved"
    assert first["data"]["oldValue"]["properties"]["status"] == "review" and first["data"]["updateMask"] == ["status"]
    assert second["data"]["value"]["properties"]["status"] == "dismissed"
    refused = client.post(path, headers=headers, data={"entity_key": "docs", "operation": "updated",
                                                       "as_if_new": "approved"})
    assert refused.status_code == 422 and "as if, new row: write name=value, not &#39;approved&#39;" in refused.text


def test_a_view_only_session_sees_the_rows_but_cannot_change_them(client: TestClient) -> None:
    key = organization(client, "acme")
    created = client.post("/v1/integrations", headers=key,
                          json={"url": "http://127.0.0.1:9/hook", "events": [APPROVED]})
    signed_in(client, key, "acme", capabilities=["view"])
    page = client.get(f"/portal/o/acme/integrations/{created.json()['id']}").text
    assert 'name="only:docs:0:value" class="value" value="review" placeholder="value" aria-label="docs row 1 value" ' \
        'readonly' in page
    assert "add-row" not in page and "remove-row" not in page and 'id="json-conditions"' not in page
