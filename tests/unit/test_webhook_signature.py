"""Webhook signatures (RELIABILITY R9): Stripe's scheme, 300 s tolerance, constant-time check."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from evbilling.adapters.notify.webhooks import (
    WebhookSignatureError,
    check_url,
    new_secret,
    signature_header,
    verify,
)

SECRET = new_secret()
BODY = b'{"id":"evt_1","type":"session.started","created":1700000000,"data":{}}'
NOW = 1_700_000_000


def test_a_signed_body_verifies_and_returns_its_timestamp():
    header = signature_header(SECRET, BODY, NOW)

    assert verify(BODY, header, SECRET, now=NOW) == NOW


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()

    assert signature_header(SECRET, BODY, NOW) == f"t={NOW},v1={expected}"


@pytest.mark.parametrize("header, reason", [
    (None, "missing signature header"),
    ("", "missing signature header"),
    ("v1=abc", "malformed signature header"),
    (f"t={NOW}", "malformed signature header"),
    (f"t=abc,v1={'0' * 64}", "malformed signature header"),
    (f"t={NOW},t={NOW},v1={'0' * 64}", "malformed signature header"),
    (f"t={NOW},v1={'0' * 64}", "no signature matches"),
])
def test_a_missing_malformed_or_wrong_header_is_refused(header, reason):
    with pytest.raises(WebhookSignatureError) as caught:
        verify(BODY, header, SECRET, now=NOW)

    assert caught.value.reason == reason


def test_an_altered_body_is_refused():
    header = signature_header(SECRET, BODY, NOW)

    with pytest.raises(WebhookSignatureError, match="no signature matches"):
        verify(BODY.replace(b"evt_1", b"evt_2"), header, SECRET, now=NOW)


def test_another_secret_is_refused():
    with pytest.raises(WebhookSignatureError, match="no signature matches"):
        verify(BODY, signature_header(new_secret(), BODY, NOW), SECRET, now=NOW)


def test_a_timestamp_older_than_300_seconds_is_refused():
    header = signature_header(SECRET, BODY, NOW - 301)

    assert verify(BODY, signature_header(SECRET, BODY, NOW - 300), SECRET, now=NOW)
    with pytest.raises(WebhookSignatureError, match="too old"):
        verify(BODY, header, SECRET, now=NOW)


def test_a_timestamp_more_than_a_minute_ahead_is_refused():
    assert verify(BODY, signature_header(SECRET, BODY, NOW + 60), SECRET, now=NOW)
    with pytest.raises(WebhookSignatureError, match="future"):
        verify(BODY, signature_header(SECRET, BODY, NOW + 61), SECRET, now=NOW)


def test_a_re_signed_timestamp_cannot_be_grafted_onto_an_old_signature():
    old = signature_header(SECRET, BODY, NOW - 3600)
    signature = old.split(",")[1]

    with pytest.raises(WebhookSignatureError, match="no signature matches"):
        verify(BODY, f"t={NOW},{signature}", SECRET, now=NOW)


def test_during_a_rotation_either_secret_verifies():
    new = new_secret()

    assert verify(BODY, signature_header(SECRET, BODY, NOW), [new, SECRET], now=NOW)
    assert verify(BODY, signature_header(new, BODY, NOW), [new, SECRET], now=NOW)


def test_secrets_are_long_and_random():
    assert SECRET.startswith("whsec_") and len(SECRET) >= 40 and new_secret() != SECRET


@pytest.mark.parametrize("url", ["ftp://example.com/", "https://user:pw@example.com/",
                                 "https:///path", "https://example.com/#x", "example.com"])
def test_endpoint_urls_must_be_plain_http_or_https(url):
    with pytest.raises(ValueError):
        check_url(url)
