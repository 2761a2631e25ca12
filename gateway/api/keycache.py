"""A short per-process memory of verified API keys, so most requests skip the store's key lookup.

Only keys the store accepted are remembered, by the SHA-256 the store keeps (never the
key itself), for ``SATUPINTU_KEY_CACHE_SECONDS`` counted from when the lookup started.
A key revoked or rotated by another process (``satupintu clients revoke``) therefore
keeps working in a gateway process for at most that long; a revocation in this process
forgets every remembered key at once (``clients.changes()``).  Unknown or revoked keys are
never remembered: each costs a lookup, so a new key works at once, and guessing keys
cannot fill the memory.  At most ``size`` keys are kept; the oldest goes first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .. import clients


class KeyCache:
    def __init__(self, *, size: int = 1024, clock: Callable[[], float] = time.monotonic):
        self.size = size
        self.clock = clock
        self._entries: dict[str, tuple[clients.Client, float, int]] = {}  # hash → client, until, generation
        self._lock = threading.Lock()

    def client(self, key: str, lookup: Callable[[str], clients.Client | None], *,
               seconds: float) -> clients.Client | None:
        """The client of ``key``: remembered, or ``lookup(key)`` (the store), remembered for ``seconds``."""
        if seconds <= 0:
            return lookup(key)
        digest = clients.hash_key(key)
        started, generation = self.clock(), clients.changes()
        entry = self._entries.get(digest)
        if entry is not None and started < entry[1] and entry[2] == generation:
            return entry[0]
        client = lookup(key)
        with self._lock:
            if client is None:
                self._entries.pop(digest, None)
                return None
            self._entries.pop(digest, None)  # re-inserted last: the dict's order is the age
            while len(self._entries) >= self.size:
                del self._entries[next(iter(self._entries))]
            self._entries[digest] = (client, started + seconds, generation)
        return client

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
