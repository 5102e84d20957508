"""Webhook signatures as Standard Webhooks v1 define them.

A delivery carries ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature``: space-separated ``v1,<base64 HMAC-SHA256>`` entries, each over
``"{id}.{timestamp}.{body}"`` with the endpoint's secret (``whsec_`` + base64 of the key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any, Mapping, Union

TOLERANCE_SECONDS = 5 * 60


class WebhookVerificationError(Exception):
    """The delivery is not signed with this secret, or its timestamp is too far from now."""


def _key(secret: str) -> bytes:
    raw = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError as e:
        raise ValueError("the secret must be whsec_ followed by base64") from e


def sign(secret: str, msg_id: str, timestamp: int, body: Union[bytes, str]) -> str:
    """The ``webhook-signature`` value for a delivery: ``v1,<base64>``."""
    payload = body.encode() if isinstance(body, str) else body
    signed = f"{msg_id}.{timestamp}.".encode() + payload
    mac = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(secret: str, headers: Mapping[str, str], body: Union[bytes, str], *, tolerance: int = TOLERANCE_SECONDS, now: Union[int, None] = None) -> Any:
    """Checks a delivery's signature and timestamp and returns its parsed JSON body.

    ``headers`` may use any capitalisation. Raises :class:`WebhookVerificationError` when no
    ``v1`` signature matches or the timestamp is more than ``tolerance`` seconds from now
    (a replay)."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        timestamp = int(lower["webhook-timestamp"])
        signatures = lower["webhook-signature"]
    except (KeyError, ValueError) as e:
        raise WebhookVerificationError("missing or malformed webhook-id, webhook-timestamp or webhook-signature header") from e
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(f"the timestamp is {current - timestamp} s from now (tolerance {tolerance} s)")
    expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1]
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(body)
    raise WebhookVerificationError("no v1 signature matches")
