"""Standard Webhooks v1 signatures, against the specification's published example."""

import base64

import pytest

from rewardlab import WebhookVerificationError, sign, verify

# The example of the Standard Webhooks specification (and its reference libraries' tests).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = '{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def headers(signature: str, timestamp: int = TIMESTAMP) -> dict:
    return {"Webhook-Id": MSG_ID, "Webhook-Timestamp": str(timestamp), "Webhook-Signature": signature}


def test_the_signature_is_the_specifications_example():
    assert sign(SECRET, MSG_ID, TIMESTAMP, BODY) == EXPECTED


def test_a_signed_delivery_verifies_and_returns_its_body():
    assert verify(SECRET, headers(f"v1,bogus {EXPECTED}"), BODY.encode(), now=TIMESTAMP + 10) == {"test": 2432232314}


def test_a_changed_body_or_another_secret_is_refused():
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers(EXPECTED), '{"test": 2432232315}', now=TIMESTAMP)
    other = "whsec_" + base64.b64encode(b"another secret of 24 byt").decode()
    with pytest.raises(WebhookVerificationError):
        verify(other, headers(EXPECTED), BODY, now=TIMESTAMP)


def test_an_old_timestamp_is_a_replay():
    with pytest.raises(WebhookVerificationError, match="from now"):
        verify(SECRET, headers(EXPECTED), BODY, now=TIMESTAMP + 3600)


def test_missing_headers_are_refused():
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify(SECRET, {"webhook-id": MSG_ID}, BODY, now=TIMESTAMP)
