"""Webhooks: the submitting client hears of every change of its application's combined status.

The tracker records a delivery row in the same transaction as the status change; the
notifier (a thread of the tracker process) POSTs it to the client's registered URL,
signed like agency callbacks (``X-Satupintu-Signature: t=<unix>,v1=<hmac>``) with the
client's webhook secret: the SHA-256 of its API key, which the client can compute and
nobody else learns from the wire.  Failed deliveries are retried with exponential
backoff; every attempt is recorded on the row and the final result in the history.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from typing import Any

import requests
from sqlalchemy import Connection, Engine, bindparam, insert, or_, select, update

from adapters.egress import EgressPolicy
from adapters.transport import guard_session
from core.settings import Settings

from . import clients, signatures
from .store import records
from .store import tables as t

log = logging.getLogger("satupintu.notifier")

MAX_ATTEMPTS = 12  # about 34 minutes of backoff in all: 1, 2, 4, ... 512 s
TIMEOUT = (3, 10)


# Built once: constructing a statement per call costs more than executing it.
_WEBHOOK_URL = select(t.clients.c.webhook_url).where(t.clients.c.id == bindparam("client_id"))
_INSERT_WEBHOOK = insert(t.webhooks)


def enqueue(conn: Connection, app: Any, status: str, *, cause: str) -> None:
    """Record a webhook delivery for ``app``'s new combined status, if its client has a URL."""
    url = _webhook_url(conn, app.client_id)
    if not url:
        return
    moment = records.now()
    body = {"type": "application.status", "application_id": app.id, "service": app.service,
            "reference": app.reference, "status": status, "cause": cause, "occurred_at": records.iso(moment)}
    row = {"client_id": app.client_id, "application_id": app.id, "url": url, "body": body,
           "attempts": 0, "next_attempt_at": moment, "created_at": moment}
    deferred = records.transaction_memo(conn, "deferred_webhooks").get("rows")
    if deferred is not None:
        deferred.append(row)
    else:
        conn.execute(_INSERT_WEBHOOK, row)


def defer(conn: Connection) -> None:
    """Keep this transaction's webhook deliveries in memory until ``write_deferred`` (the
    tracker's batch writes them in one statement at its end)."""
    records.transaction_memo(conn, "deferred_webhooks")["rows"] = []


def write_deferred(conn: Connection) -> None:
    """Write the deliveries kept since ``defer``, in the order they were recorded."""
    rows = records.transaction_memo(conn, "deferred_webhooks").pop("rows", None)
    if rows:
        conn.execute(_INSERT_WEBHOOK, rows)


def _webhook_url(conn: Connection, client_id: str) -> str | None:
    """The client's webhook URL, read once per transaction and client (a tracker batch
    settles many applications of the same few clients)."""
    urls = records.transaction_memo(conn, "webhook_urls")
    if client_id not in urls:
        urls[client_id] = conn.execute(_WEBHOOK_URL, {"client_id": client_id}).scalar()
    return urls[client_id]


def backoff(attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(600, 2 ** max(0, attempts - 1)))


class Notifier:
    def __init__(self, engine: Engine, *, batch: int = 50, idle_wait: float = 0.5, settings: Settings | None = None):
        self.engine = engine
        settings = settings or Settings.from_env()
        self.webhook_key = settings.webhook_key
        self.batch = batch
        self.idle_wait = idle_wait
        self.stopping = threading.Event()
        # Webhook URLs are the clients' to choose: never link-local or metadata addresses.
        self.session = guard_session(requests.Session(), EgressPolicy.from_settings(settings))
        self.session.trust_env = False

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                if self.deliver_due() == 0:
                    self.stopping.wait(self.idle_wait)
            except Exception:
                log.exception("webhook delivery round failed")
                self.stopping.wait(2)

    def deliver_due(self) -> int:
        moment = records.now()
        with self.engine.begin() as conn:
            ids = list(conn.execute(
                select(t.webhooks.c.id).where(t.webhooks.c.delivered_at.is_(None),
                                              t.webhooks.c.attempts < MAX_ATTEMPTS,
                                              t.webhooks.c.next_attempt_at <= moment,
                                              or_(t.webhooks.c.claimed_until.is_(None),
                                                  t.webhooks.c.claimed_until < moment))
                .order_by(t.webhooks.c.id).limit(self.batch).with_for_update(skip_locked=True)).scalars())
            if not ids:
                return 0
            conn.execute(update(t.webhooks).where(t.webhooks.c.id.in_(ids))
                         .values(claimed_until=moment + dt.timedelta(seconds=60)))
            rows = list(conn.execute(select(t.webhooks, t.clients.c.webhook_nonce)
                                     .join(t.clients, t.clients.c.id == t.webhooks.c.client_id)
                                     .where(t.webhooks.c.id.in_(ids))))
        for row in rows:
            self._deliver(row)
        return len(rows)

    def _deliver(self, row: Any) -> None:
        raw = json.dumps(row.body, separators=(",", ":")).encode()
        error = None
        try:
            response = self.session.post(row.url, data=raw, timeout=TIMEOUT, allow_redirects=False, headers={
                "Content-Type": "application/json", "X-Satupintu-Signature": signatures.sign(
                    clients.webhook_secret(self.webhook_key, row.client_id, row.webhook_nonce), raw),
                "User-Agent": "satupintu-webhook/1"})
            if not 200 <= response.status_code < 300:
                error = f"answered {response.status_code}"
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        attempts = row.attempts + 1
        moment = records.now()
        with self.engine.begin() as conn:
            values: dict[str, Any] = {"attempts": attempts, "claimed_until": None, "last_error": error}
            if error is None:
                values["delivered_at"] = moment
            else:
                values["next_attempt_at"] = moment + backoff(attempts)
            conn.execute(update(t.webhooks).where(t.webhooks.c.id == row.id).values(**values))
            if error is None or attempts >= MAX_ATTEMPTS:
                app = records.application_row(conn, row.application_id, lock=True)
                records.add_event(conn, application_id=app.id, type="notification",
                                  status=row.body.get("status"), cause="webhook",
                                  detail={"url": row.url, "attempts": attempts,
                                          "delivered": error is None, "last_error": error})
