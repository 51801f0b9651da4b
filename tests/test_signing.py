"""Signing against the Standard Webhooks spec vector, verified with the reference library."""

import base64
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from models.errors import SecretError
from publisher.sending.signing import check_secret, generate_secret, secret_key, sign, webhook_headers

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'


def test_spec_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_second_published_vector() -> None:
    body = b'{"event_type":"ping","data":{"success":true}}'
    assert sign("whsec_plJ3nmyCDGBKInavdOK15jsl", "msg_loFOjxBNrRLzqYUf", 1731705121, body) == \
        "v1,rAvfW3dJ/X/qxhsaXPOyyCGmRKsaKWcsNccKXlIktD0="


def test_headers_verify_with_the_reference_library() -> None:
    secret = generate_secret()
    now = int(datetime.now(UTC).timestamp())
    headers = webhook_headers([secret], "evt_1_i2", now, b'{"a": 1}')
    assert Webhook(secret).verify(b'{"a": 1}', headers) == {"a": 1}


def test_rotation_overlap_signs_with_both_and_each_secret_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    now = int(datetime.now(UTC).timestamp())
    headers = webhook_headers([new, old], "evt_1_i2", now, b"{}")
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(b"{}", headers)
    Webhook(new).verify(b"{}", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(b"{}", headers)


def test_tampered_body_or_stale_timestamp_fail_verification() -> None:
    secret = generate_secret()
    now = datetime.now(UTC)
    headers = webhook_headers([secret], "evt_1_i2", int(now.timestamp()), b'{"a": 1}')
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"a": 2}', headers)
    stale = webhook_headers([secret], "evt_1_i2", int((now - timedelta(minutes=10)).timestamp()), b"{}")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b"{}", stale)


@pytest.mark.parametrize("size", [24, 32, 64])
def test_generated_secrets_have_the_asked_size(size: int) -> None:
    secret = generate_secret(size)
    assert secret.startswith("whsec_") and len(secret_key(secret)) == size


@pytest.mark.parametrize("size", [0, 23, 65])
def test_secret_sizes_outside_24_to_64_are_refused(size: int) -> None:
    with pytest.raises(SecretError, match="24-64"):
        generate_secret(size)


def test_unpadded_secret_is_accepted_and_garbage_is_refused() -> None:
    assert secret_key("whsec_AAAA") == b"\0\0\0"
    assert secret_key("whsec_AAA") == b"\0\0"
    with pytest.raises(SecretError, match="base64"):
        secret_key("whsec_not base64!")


@pytest.mark.parametrize("size", [1, 16, 23, 65, 128])
def test_a_given_secret_needs_the_standard_webhooks_24_to_64_bytes(size: int) -> None:
    secret = "whsec_" + base64.b64encode(b"k" * size).decode()
    with pytest.raises(SecretError, match=f"{size} bytes.*24 to 64"):
        check_secret(secret)


def test_a_given_secret_of_a_good_size_is_accepted() -> None:
    for size in (24, 32, 64):
        secret = "whsec_" + base64.b64encode(b"k" * size).decode()
        assert check_secret(secret) == secret
    with pytest.raises(SecretError, match="base64"):
        check_secret("whsec_not base64!")


def test_ids_with_dots_are_refused() -> None:
    with pytest.raises(SecretError, match=r"'\.'"):
        sign(SPEC_SECRET, "a.b", 1, b"")
