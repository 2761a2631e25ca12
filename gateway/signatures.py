"""HMAC signatures of callbacks and webhooks: ``t=<unix>,v1=<hex hmac-sha256 of "t.body">``.

The header is parsed strictly: exactly one ``t`` of digits only, one or more ``v1`` of 64
lower- or upper-case hex digits, nothing else, no spaces.  A loose parser let one valid
signature be spelled many ways (``v1=MAC,t=T``, ``t=+T``, a trailing ``,x=1``), each a new
text for a replay memory keyed on the header's text (docs/security.md); the replay memory
is now keyed on what was signed (``replay_key``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import NamedTuple

TOLERANCE = 300  # seconds either side of now
_ITEM = re.compile(r"(t)=([0-9]{1,12})|(v1)=([0-9a-fA-F]{64})")


class MalformedSignature(ValueError):
    """Raised when a signature header is not ``t=<digits>,v1=<64 hex>[,v1=<64 hex>...]``."""


class Signature(NamedTuple):
    timestamp: int
    macs: tuple[str, ...]


def mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={mac(secret, t, body)}"


def parse(header: str) -> Signature:
    """The timestamp and MACs of a header, or ``MalformedSignature`` saying what is wrong."""
    timestamps, macs = [], []
    for item in header.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise MalformedSignature("the signature must be t=<unix seconds>,v1=<64 hex digits>, nothing else")
        if match.group(1):
            timestamps.append(int(match.group(2)))
        else:
            macs.append(match.group(4).lower())
    if len(timestamps) != 1:
        raise MalformedSignature("the signature must have exactly one t=<unix seconds>")
    if not macs:
        raise MalformedSignature("the signature has no v1=<64 hex digits>")
    return Signature(timestamps[0], tuple(macs))


def verify(secret: str, body: bytes, header: str, *, now: float | None = None) -> str | None:
    """None when ``header`` is a valid, fresh signature of ``body``; else what is wrong.

    Raises ``MalformedSignature`` for a header that is not spelled as ``sign`` spells it.
    """
    signature = parse(header)
    now = time.time() if now is None else now
    if abs(now - signature.timestamp) > TOLERANCE:
        return f"the signature timestamp is more than {TOLERANCE} s away from now"
    expected = mac(secret, signature.timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signature.macs):
        return "the signature does not match"
    return None


def replay_key(agency: str, secret: str, body: bytes, header: str) -> str:
    """What a verified signature commits to, (agency, t, MAC), as one 64-character key."""
    timestamp = parse(header).timestamp
    return hashlib.sha256(f"{agency}\n{timestamp}\n{mac(secret, timestamp, body)}".encode()).hexdigest()
