"""The per-client rate limit (OWASP API4): a token bucket in the store, one UPSERT per request.

Each client has one row: ``tokens`` left and when they were last counted.  A request
refills the bucket by ``rate`` tokens a second up to ``burst`` and takes one if there is
one, all inside a single ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``: the row
lock of that statement serialises concurrent requests, so the limit holds however many
gunicorn workers (or gateway machines) serve the API.  The clock is the gateway's
(``time.time()``); gateways on several machines need NTP-synchronised clocks, as they do
for callback signatures anyway.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Float, bindparam, case
from sqlalchemy.dialects import postgresql, sqlite

from ..store import tables as t


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    remaining: int
    retry_after: int  # whole seconds until a token is back (0 when allowed)


_STATEMENTS: dict[str, Any] = {}


def _statement(dialect_name: str) -> Any:
    """The UPSERT, built once per dialect (building it costs more than running it)."""
    if dialect_name not in _STATEMENTS:
        table = t.rate_limits
        dialect = postgresql if dialect_name == "postgresql" else sqlite
        now, rate, burst = bindparam("now", type_=Float), bindparam("rate", type_=Float), bindparam("burst", type_=Float)
        elapsed = now - table.c.updated_at
        refilled = table.c.tokens + case((elapsed > 0, elapsed), else_=0.0) * rate
        available = case((refilled > burst, burst), else_=refilled)
        statement = dialect.insert(table).values(client_id=bindparam("client_id"), tokens=burst - 1, updated_at=now,
                                                 allowed=1)
        _STATEMENTS[dialect_name] = statement.on_conflict_do_update(
            index_elements=[table.c.client_id],
            set_={"tokens": case((available >= 1, available - 1), else_=available),
                  "allowed": case((available >= 1, 1), else_=0),
                  "updated_at": case((now > table.c.updated_at, now), else_=table.c.updated_at)},
        ).returning(table.c.tokens, table.c.allowed)
    return _STATEMENTS[dialect_name]


def take(engine: Engine, client_id: str, *, rate: float, burst: int, now: float | None = None) -> Verdict:
    """Take one token from ``client_id``'s bucket; says whether the request may go on."""
    now = time.time() if now is None else now
    statement = _statement(engine.dialect.name)
    with engine.begin() as conn:
        tokens, allowed = conn.execute(statement, {"client_id": client_id, "now": now, "rate": float(rate),
                                                   "burst": float(burst)}).one()
    if allowed:
        return Verdict(True, int(tokens), 0)
    wait = (1 - tokens) / rate if rate > 0 else 1
    return Verdict(False, 0, max(1, math.ceil(wait)))
