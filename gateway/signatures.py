"""HMAC signatures of callbacks and webhooks: ``t=<unix>,v1=<hex hmac-sha256 of "t.body">``."""

from __future__ import annotations

import hashlib
import hmac
import time

TOLERANCE = 300  # seconds either side of now


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, now: float | None = None) -> str | None:
    """None when ``header`` is a valid, fresh signature of ``body``; else what is wrong."""
    parts = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return "the signature has no valid t= timestamp"
    now = time.time() if now is None else now
    if abs(now - t) > TOLERANCE:
        return f"the signature timestamp is more than {TOLERANCE} s away from now"
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", [])):
        return "the signature does not match"
    return None
