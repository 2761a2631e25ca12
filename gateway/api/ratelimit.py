"""The per-client rate limit (OWASP API4): a token bucket in the store, leased out in small batches.

Each client has one row: ``tokens`` left and when they were last counted.  One
``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` refills the bucket by ``rate`` tokens a
second up to its capacity and takes what was asked for (``want`` tokens, or just one when
fewer are left, or none): the row lock of that statement serialises concurrent takers, so
the limit holds however many gunicorn workers (or gateway machines) serve the API.  The
clock is the gateway's (``time.time()``); gateways on several machines need
NTP-synchronised clocks, as they do for callback signatures anyway.

A busy process does not run that statement for every request: ``Leases`` takes several
tokens at once (sized to its own recent pace) and spends them locally for at most
``lease`` seconds, then drops what is left.  A token may thus be spent up to ``lease`` seconds after the store counted it, so
the store's bucket holds ``ceil(rate × lease)`` tokens less than the burst: in any ``T``
seconds a client gets at most ``burst + rate × T`` requests through, however many processes
serve it (see docs/security.md for the argument).  Leasing is off, and every request takes
its own token as before, when ``rate × lease < 2`` or that reserve would exceed a tenth of
the burst (the lease is shortened to fit first).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Float, Integer, bindparam, case
from sqlalchemy.dialects import postgresql, sqlite

from ..store import tables as t


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    remaining: int
    retry_after: int  # whole seconds until a token is back (0 when allowed)


_STATEMENTS: dict[str, Any] = {}


def _statement(dialect_name: str) -> Any:
    """The UPSERT, built once per dialect (building it costs more than running it).

    ``allowed`` becomes the number of tokens granted: ``want`` if there are that many,
    else one if there is one, else none.
    """
    if dialect_name not in _STATEMENTS:
        table = t.rate_limits
        dialect = postgresql if dialect_name == "postgresql" else sqlite
        now, rate, burst = bindparam("now", type_=Float), bindparam("rate", type_=Float), bindparam("burst", type_=Float)
        want = bindparam("want", type_=Integer)
        elapsed = now - table.c.updated_at
        refilled = table.c.tokens + case((elapsed > 0, elapsed), else_=0.0) * rate
        available = case((refilled > burst, burst), else_=refilled)
        granted = case((available >= want, want), (available >= 1, 1), else_=0)
        statement = dialect.insert(table).values(client_id=bindparam("client_id"), tokens=burst - want,
                                                 updated_at=now, allowed=want)
        _STATEMENTS[dialect_name] = statement.on_conflict_do_update(
            index_elements=[table.c.client_id],
            set_={"tokens": available - granted,
                  "allowed": granted,
                  "updated_at": case((now > table.c.updated_at, now), else_=table.c.updated_at)},
        ).returning(table.c.tokens, table.c.allowed)
    return _STATEMENTS[dialect_name]


def take_many(engine: Engine, client_id: str, want: int, *, rate: float, burst: float,
              now: float | None = None) -> tuple[int, float]:
    """Take up to ``want`` tokens (``want``, 1 or 0) from ``client_id``'s bucket of capacity
    ``burst`` (at least ``want``); returns how many were granted and how many are left."""
    now = time.time() if now is None else now
    statement = _statement(engine.dialect.name)
    with engine.begin() as conn:
        tokens, granted = conn.execute(statement, {"client_id": client_id, "now": now, "rate": float(rate),
                                                   "burst": float(burst), "want": want}).one()
    return int(granted), float(tokens)


def take(engine: Engine, client_id: str, *, rate: float, burst: int, now: float | None = None) -> Verdict:
    """Take one token from ``client_id``'s bucket; says whether the request may go on."""
    granted, tokens = take_many(engine, client_id, 1, rate=rate, burst=burst, now=now)
    if granted:
        return Verdict(True, int(tokens), 0)
    return Verdict(False, 0, _retry_after(tokens, rate))


def _retry_after(tokens: float, rate: float) -> int:
    wait = (1 - tokens) / rate if rate > 0 else 1
    return max(1, math.ceil(wait))


@dataclass(frozen=True)
class Plan:
    """How tokens are leased for one (rate, burst, lease) setting."""

    lease: float  # seconds a leased token may be kept; 0: no leasing, one token per request
    most: int  # the largest lease
    capacity: float  # the store bucket's capacity: the burst less the reserve


def plan(rate: float, burst: int, lease: float) -> Plan:
    """Leasing for ``rate``/``burst`` with leases of up to ``lease`` seconds (shortened so the
    reserve stays within a tenth of the burst); no leasing when a lease would hold < 2 tokens."""
    lease = min(lease, burst / 10 / rate) if rate > 0 else 0.0
    most = int(rate * lease)
    if most < 2:
        return Plan(0.0, 1, float(burst))
    return Plan(lease, most, float(burst - math.ceil(rate * lease)))


class _Lease:
    __slots__ = ("lock", "tokens", "granted", "since", "until", "size")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tokens = 0  # leased tokens not spent yet
        self.granted = 0  # how many the last lease brought
        self.since = 0.0  # when it was taken (monotonic)
        self.until = 0.0  # when its tokens expire (monotonic)
        self.size = 1  # how many it asked for


class Leases:
    """This process's leased tokens, per client; ``spend()`` decides one request.

    A lease asks for what this process will almost surely spend of the client's tokens
    before the lease ends: at the pace measured over its last lease (spent ÷ time until
    the next was needed), the expected count *E* less three standard deviations of a
    Poisson count, *E* - 3√*E*; at most twice the last lease and at most the plan's
    ``most``.  Tokens dropped unspent then stay around 2 % (they would hold a client below
    its limit); below ~14 requests per lease period it takes one token at a time; near the
    limit the bucket grants one at a time.  A thread that finds the client's tokens gone
    runs the UPSERT holding that client's lock, so the other threads of this process wait
    for its lease instead of running their own.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self.clock, self.monotonic = clock, monotonic
        self._leases: dict[str, _Lease] = {}  # one per client that made a request here
        self._pid = os.getpid()

    def spend(self, engine: Engine, client_id: str, *, rate: float, burst: int, lease: float) -> Verdict:
        """Spend one of ``client_id``'s tokens (leasing more from the store when none are left)."""
        plan_ = plan(rate, burst, lease)
        if self._pid != os.getpid():  # a forked child: its parent's tokens are not its own to spend
            self._leases, self._pid = {}, os.getpid()
        state = self._leases.get(client_id) or self._leases.setdefault(client_id, _Lease())
        with state.lock:
            moment = self.monotonic()
            if state.tokens > 0 and moment < state.until:
                state.tokens -= 1
                return Verdict(True, state.tokens, 0)
            want = 1
            if state.granted and plan_.most > 1:
                pace = (state.granted - state.tokens) / max(moment - state.since, 0.001)  # tokens a second
                expected = pace * plan_.lease
                want = max(1, min(int(expected - 3 * math.sqrt(expected)), 2 * state.size, plan_.most))
            granted, left = take_many(engine, client_id, want, rate=rate, burst=plan_.capacity, now=self.clock())
            # Counted from before the UPSERT: the store counted the tokens at that moment.
            state.granted, state.tokens, state.size = granted, max(0, granted - 1), want
            state.since, state.until = moment, moment + plan_.lease
            if not granted:
                return Verdict(False, 0, _retry_after(left, rate))
            return Verdict(True, int(left) + state.tokens, 0)
