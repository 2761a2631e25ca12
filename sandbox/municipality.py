"""The municipality: a REST agency that files a business permit and decides later.

With a callback URL it answers 202 and, after ``decision_delay`` seconds, POSTs a signed
decision to the gateway (retrying with backoff); without one it decides at once.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import requests
from flask import Flask, jsonify

from .agency import Agency, now_iso
from .auth import sign
from .rest import Answer, FilingRoute, filing_route, lookup, rest_app
from .scheduler import Scheduler

AGENCY_ID = "municipality"
SIGNATURE_HEADER = "X-Satupintu-Signature"
CALLBACK_TIMEOUT = 5.0
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
MAX_ATTEMPTS = 10  # 0.5 + 1 + 2 + ... capped at 30 s: about two minutes in all
CALLBACK_STATS = ("callbacks_sent", "callbacks_failed", "callbacks_given_up")

log = logging.getLogger(__name__)


class CallbackSender:
    """Delivers signed decision callbacks, retrying with doubling backoff."""

    def __init__(self, agency: Agency, scheduler: Scheduler) -> None:
        self.agency = agency
        self.scheduler = scheduler
        self._sessions = threading.local()
        self.given_up: list[dict[str, Any]] = []

    def send(self, url: str, secret: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self._attempt(url, secret, body, 1, FIRST_BACKOFF, self.agency.generation)

    def _attempt(
        self,
        url: str,
        secret: str,
        body: bytes,
        attempt: int,
        backoff: float,
        generation: int,
    ) -> None:
        if generation != self.agency.generation:
            return  # the sandbox was reset since this callback was due
        headers = {"Content-Type": "application/json"}
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        try:
            answer = self._session().post(
                url, data=body, headers=headers, timeout=CALLBACK_TIMEOUT
            )
            ok, why = answer.ok, f"HTTP {answer.status_code}"
        except requests.RequestException as exc:
            ok, why = False, f"{type(exc).__name__}: {exc}"
        if ok:
            self.agency.ledger.bump("callbacks_sent")
            return
        self.agency.ledger.bump("callbacks_failed")
        if attempt >= MAX_ATTEMPTS:
            self.agency.ledger.bump("callbacks_given_up")
            self.given_up.append({"url": url, "body": body.decode(), "last_error": why})
            log.warning(
                "gave up on callback to %s after %d attempts: %s", url, attempt, why
            )
            return
        self.scheduler.later(
            backoff,
            lambda: self._attempt(
                url,
                secret,
                body,
                attempt + 1,
                min(backoff * 2, MAX_BACKOFF),
                generation,
            ),
        )

    def _session(self) -> requests.Session:
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
        return session


def create_app(agency: Agency, scheduler: Scheduler) -> Flask:
    app = rest_app(AGENCY_ID)
    agency.extra_stats = CALLBACK_STATS
    sender = CallbackSender(agency, scheduler)
    permits: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()
    agency.on_reset(permits.clear)
    agency.on_reset(sender.given_up.clear)
    agency.report = lambda: {"undelivered_callbacks": sender.given_up[-20:]}

    def view(permit: dict[str, Any]) -> dict[str, Any]:
        shown = {"permit_id": permit["permit_id"], "status": permit["status"]}
        if permit["status"] in ("REJECTED",) and permit.get("reason"):
            shown["reason"] = permit["reason"]
        return shown

    def notify(permit: dict[str, Any]) -> None:
        payload = {
            "request_id": permit["request_id"],
            "status": permit["status"].lower(),
            "reference": permit["permit_id"],
        }
        if permit["status"] == "REJECTED":
            payload["reason"] = permit["reason"]
        sender.send(permit["callback_url"], permit["callback_secret"], payload)

    def decide(permit_id: str, generation: int) -> None:
        if generation != agency.generation:
            return
        with lock:
            permit = permits.get(permit_id)
            if permit is None or permit["status"] != "RECEIVED":
                return  # cancelled meanwhile (the cancel sent its own callback)
            permit["status"] = permit.pop("decision")
            permit["decided_at"] = now_iso()
        notify(permit)

    def file_permit(request_id: str, payload: dict[str, Any]) -> Answer:
        reason = agency.rejection(payload)
        permit = {
            "permit_id": agency.reference("PRM-", 8),
            "request_id": request_id,
            "reason": reason,
            "received_at": now_iso(),
            "callback_url": agency.knobs.get("callback_url"),
            "callback_secret": agency.knobs.get("callback_secret"),
        }
        decision = "REJECTED" if reason else "APPROVED"
        if permit["callback_url"]:
            permit.update(status="RECEIVED", decision=decision)
            delay, generation = agency.knobs.get("decision_delay"), agency.generation
            scheduler.later(delay, lambda: decide(permit["permit_id"], generation))
            status = 202
        else:
            permit.update(status=decision, decided_at=now_iso())
            status = 200
        with lock:
            permits[permit["permit_id"]] = permit
        return status, view(permit)

    filing = FilingRoute(agency, "file_permit", ("company_name",), file_permit)
    filing_route(app, "/permits", "create_permit", filing)

    @app.get("/permits")
    def lookup_permit():
        def current(answer: Answer) -> dict[str, Any]:
            with lock:
                permit = permits.get(answer[1]["permit_id"])
            return view(permit) if permit else answer[1]

        return lookup(agency, "lookup_permit", current)

    @app.get("/permits/<permit_id>")
    def get_permit(permit_id: str):
        agency.ledger.count("get_permit")
        with lock:
            permit = permits.get(permit_id)
        if permit is None:
            return jsonify({"error": "no such permit", "permit_id": permit_id}), 404
        return jsonify(view(permit))

    @app.delete("/permits/<permit_id>")
    def cancel_permit(permit_id: str):
        agency.ledger.count("cancel_permit")
        with lock:
            permit = permits.get(permit_id)
            if permit is None:
                return jsonify({"error": "no such permit", "permit_id": permit_id}), 404
            if permit["status"] not in ("RECEIVED", "CANCELLED"):
                return jsonify(
                    {"error": "already decided", "status": permit["status"]}
                ), 409
            first_cancel = permit["status"] == "RECEIVED"
            permit["status"] = "CANCELLED"
            permit.pop("decision", None)
        if first_cancel and permit["callback_url"]:
            scheduler.later(0, lambda: notify(permit))
        return jsonify(view(permit))

    return app
