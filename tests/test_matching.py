import pytest

from publisher.errors import SubscriptionError
from publisher.matching import matches_any, parse_subscription


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
