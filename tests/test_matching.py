import pytest

from publisher.errors import SubscriptionError
from publisher.routing.matching import matches_any, parse_subscription


@pytest.mark.parametrize(("text", "key", "op", "expected"), [
    ("flows/comments:created", "flows/comments", "created", True),
    ("flows/comments:created", "flows/comments", "updated", False),
    ("flows/comments:created,deleted", "flows/comments", "deleted", True),
    ("flows/comments", "flows/comments", "updated", True),
    ("flows/*:*", "flows/packets", "deleted", True),
    ("flows/*:*", "other/packets", "deleted", False),
    ("*", "anything/at/all", "created", True),
    ("flows/comment?:updated", "flows/comments", "updated", True),
    ("flows/comments:updated", "flows/comments/extra", "updated", False),
])
def test_matching(text: str, key: str, op: str, expected: bool) -> None:
    assert parse_subscription(text).matches(key, op) is expected


def test_any_of_several() -> None:
    subscriptions = [parse_subscription("a:created"), parse_subscription("b:*")]
    assert matches_any(subscriptions, "b", "deleted")
    assert not matches_any(subscriptions, "a", "deleted")


@pytest.mark.parametrize("text", ["flows/comments:exploded", ":created", "flows:created,bogus", "x:,"])
def test_bad_subscriptions_name_the_problem(text: str) -> None:
    with pytest.raises(SubscriptionError, match="subscription"):
        parse_subscription(text)


@pytest.mark.parametrize(("text", "op", "expected"), [
    ("flows/comments:*", "read", False), ("*", "read", False), ("flows/comments", "read", False),
    ("flows/comments:read", "read", True), ("flows/comments:read", "created", False),
    ("flows/*:*,read", "read", True), ("flows/*:*,read", "deleted", True),
])
def test_read_is_asked_for_by_name_and_star_keeps_meaning_the_changes(text: str, op: str, expected: bool) -> None:
    assert parse_subscription(text).matches("flows/comments", op) is expected


def test_a_backfill_for_one_integration_reaches_only_that_one() -> None:
    from models.headers import BACKFILL_INTEGRATION as TARGET_HEADER
    from publisher.routing.recipients import parse_event, receives
    from publisher.store.rows import Integration

    body = (b'{"eventId":"evt_1_r3_000000","organizationId":"acme","entityKey":"flows/comments",'
            b'"operationType":"read","entityPath":"c/1"}')
    def integration(number: int, events: str, org: str = "acme") -> Integration:
        return Integration(number, org, f"i{number}", "http://x", [parse_subscription(events)], [])
    targeted = parse_event(body, [(TARGET_HEADER, b"7")])
    assert receives(integration(7, "flows/comments:*"), targeted)  # asking for the backfill was the opt-in
    assert not receives(integration(7, "flows/packets:*"), targeted)
    assert not receives(integration(8, "flows/comments:read"), targeted)
    assert not receives(integration(7, "flows/comments:*", org="globex"), targeted)
    for_all = parse_event(body)
    assert receives(integration(8, "flows/comments:read"), for_all)
    assert not receives(integration(7, "flows/comments:*"), for_all)
    with pytest.raises(Exception, match="not an integration id"):
        parse_event(body, [(TARGET_HEADER, b"seven")])


ROUTING_HEADERS = [("walhook-event-id", b"evt_1"), ("walhook-organization-id", b"acme"),
                   ("walhook-entity-key", b"flows/packets"), ("walhook-operation-type", b"updated"),
                   ("walhook-entity-path", b"packets/1")]


def test_a_body_nested_deeper_than_the_parser_reads_is_routed_by_its_headers() -> None:
    from publisher.errors import NotAnEvent
    from publisher.routing.recipients import parse_event

    deep = b'{"eventId": "evt_1", "data": {"value": {"properties": {"doc": ' + b"[" * 1100 + b"]" * 1100 + b"}}}}"
    assert parse_event(deep, ROUTING_HEADERS).entity_path == "packets/1"
    with pytest.raises(NotAnEvent, match="not JSON"):
        parse_event(deep, [])  # without the capture's headers it cannot be routed
    # A bracket inside a string is text, and broken JSON stays broken whatever the headers say.
    with pytest.raises(NotAnEvent, match="not JSON"):
        parse_event(b'{"eventId": "' + b"[" * 1100 + b'", ', ROUTING_HEADERS)
