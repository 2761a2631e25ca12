"""Bulk set-up rows written straight into the store with SQLAlchemy Core.

Going through the HTTP API would take minutes for a million applications and measure
the wrong thing; these rows have exactly the shape the gateway writes (same tables, same
time-ordered ids, a NIK row per application as the operators' search has them, a
front-office reference each, same outbox message body as ``gateway.workflow.dispatch``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, insert, select

from core.domain.ids import uuid7_hex
from core.masking import nik_hashes
from gateway.store import tables as t


def client_id(engine: Engine, name: str = "bench") -> str:
    with engine.connect() as conn:
        return conn.execute(select(t.clients.c.id).where(t.clients.c.name == name)).scalar_one()


def _chunks(total: int, size: int) -> Iterator[range]:
    for start in range(0, total, size):
        yield range(start, min(total, start + size))


def applications(engine: Engine, service: Any, count: int, *, client: str, status: str = "completed",
                 request_status: str = "approved", outbox: bool = False, data: dict[str, Any] | None = None,
                 keep_every: int = 0, chunk: int = 5000) -> list[str]:
    """Insert ``count`` applications of ``service``, one request per step; ids of every ``keep_every``-th.

    With ``outbox`` each request also gets its dispatch message, unsent (a queued backlog).
    """
    kept: list[str] = []
    given = data
    steps = list(service.steps.items())
    for block in _chunks(count, chunk):
        moment = dt.datetime.now(dt.UTC)
        apps, niks, requests, messages = [], [], [], []
        for i in block:
            app_id = f"app_{uuid7_hex()}"
            if keep_every and i % keep_every == 0:
                kept.append(app_id)
            data = given or {"name": "PT Bench Sejahtera", "nik": f"3171{i % 10**12:012d}"}
            apps.append({"id": app_id, "client_id": client, "service": service.id,
                         "service_version": str(service.version), "status": status,
                         "reference": f"MPP-BENCH-{i:09d}", "data": data, "idempotency_key": None,
                         "request_hash": "0" * 64, "cancel_requested": False, "created_at": moment,
                         "updated_at": moment, "due_at": None})
            niks += ({"application_id": app_id, "nik_hash": h} for h in nik_hashes(data))
            for name, step in steps:
                request_id = f"req_{uuid7_hex()}"
                requests.append({"id": request_id, "application_id": app_id, "step": name,
                                 "agency": step.agency, "operation": step.operation, "status": request_status,
                                 "agency_reference": None, "reason": None, "attempts": 0, "output": None,
                                 "updated_at": moment})
                if outbox:
                    messages.append({
                        "exchange": "dispatch", "routing_key": step.agency, "created_at": moment,
                        "body": {"message_id": f"msg_{uuid7_hex()}", "kind": "send",
                                 "request_id": request_id, "application_id": app_id, "service": service.id,
                                 "step": name, "agency": step.agency, "operation": step.operation,
                                 "payload": {"company_name": data.get("name"), "owner_nik": data.get("nik")},
                                 "reference": None},
                        "headers": {"application_id": app_id, "request_id": request_id,
                                    "traceparent": f"00-{app_id[4:]}-{uuid7_hex()[16:]}-01",
                                    "x-attempt": 1}})
        with engine.begin() as conn:
            conn.execute(insert(t.applications), apps)
            if niks:
                conn.execute(insert(t.application_niks), niks)
            conn.execute(insert(t.requests), requests)
            if messages:
                conn.execute(insert(t.outbox), messages)
    return kept
