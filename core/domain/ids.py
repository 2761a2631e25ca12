"""Identifiers: UUIDs of version 7 (RFC 9562), whose first 48 bits are the time in milliseconds.

Every id the gateway makes (applications, requests, events, messages) is the key of a
B-tree index: a random (version 4) id lands on a random leaf page, so a submission's
thirteen ids dirtied thirteen pages scattered over the whole index, each written to the
write-ahead log at commit and again at the next checkpoint, and each read back from disk
once the index outgrew the cache.  Ids that begin with the time land where the last ones
did: a submission's rows, and a group commit's, share the same few pages at the right
edge of each index (SQLite and PostgreSQL alike; decision 41 in docs/decisions.md).

The remaining 74 bits are random, so ids stay unguessable and never collide in practice;
what an id gives away is the millisecond it was made, which its holder knows already (an
application's ``created_at``; an agency receives a request when it is made).
"""

from __future__ import annotations

import os
import time

_VERSION_7 = bytes(b & 0x0F | 0x70 for b in range(256))  # an id's 7th byte, version nibble set
_RFC_4122 = bytes(b & 0x3F | 0x80 for b in range(256))  # its 9th byte: the RFC 4122 variant


def uuid7_hex() -> str:
    """One id, in the form of ``uuid.UUID(...).hex``: 32 lower-case hex digits."""
    return uuid7_hexes(os.urandom(16))


def uuid7_hexes(pool: bytes, ms: int | None = None) -> str:
    """The ids made from ``pool``'s 16-byte slots (``ms``, default now), their hex run together.

    ``pool`` supplies the random bits, one ``os.urandom`` call for many ids; its first six
    bytes in each slot are replaced by the time and two fields by the version and variant.
    """
    slots = bytearray(pool)
    stamp = (time.time_ns() // 1_000_000 if ms is None else ms).to_bytes(6, "big")
    for start in range(0, len(slots), 16):
        slots[start:start + 6] = stamp
    slots[6::16] = slots[6::16].translate(_VERSION_7)
    slots[8::16] = slots[8::16].translate(_RFC_4122)
    return slots.hex()
