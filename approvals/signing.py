"""Signatures of webhook deliveries, Stripe-style. Pure: no Django, so receivers and tests can reuse it.

A delivery carries `X-Aileron-Signature: t=<unix seconds>,v1=<hex>` where hex is
HMAC-SHA256(secret, "<t>." + body). The timestamp is signed with the body, so a receiver that refuses
signatures older than a few minutes (TOLERANCE_SECONDS) refuses replays; `X-Aileron-Delivery` names the
delivery (the same on every retry of it) for receivers that keep what they have seen.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
TOLERANCE_SECONDS = 300


def secret_new() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return mac.hexdigest()


def header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The X-Aileron-Signature value for BODY, signed now (or at TIMESTAMP)."""
    at = int(time.time()) if timestamp is None else timestamp
    return f"t={at},v1={signature(secret, body, at)}"


def verify(
    secret: str, body: bytes, value: str, *, now: float | None = None, tolerance: int = TOLERANCE_SECONDS
) -> bool:
    """Whether VALUE signs BODY with SECRET, within TOLERANCE seconds of NOW."""
    fields: dict[str, list[str]] = {}
    for part in value.split(","):
        key, sep, item = part.strip().partition("=")
        if sep:
            fields.setdefault(key, []).append(item)
    stamps = fields.get("t", [])
    # ASCII digits only, and few: str.isdigit() takes "²" (int() then raises) and a 5000-digit number would too.
    if len(stamps) != 1 or not re.fullmatch(r"[0-9]{1,12}", stamps[0]):
        return False
    at = int(stamps[0])
    if abs((time.time() if now is None else now) - at) > tolerance:
        return False
    expected = signature(secret, body, at)
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))
