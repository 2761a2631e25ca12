"""POST /v1/agencies/{agency}/callbacks: an agency's decision, authenticated by its signature.

The gateway does not change the request itself: it checks the signature (±300 s, each
signature once), then writes a callback event to the outbox, and the tracker applies it
like any other event (so a terminal request never changes).
"""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, Response, json, request
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from core.domain.errors import ConfigError
from core.domain.ids import uuid7_hex
from core.masking import mask_free_text, pii_values

from .. import signatures
from ..store import records
from ..store import tables as t
from .applications import json_body, raw_body
from .context import ctx
from .problems import TYPES, Problem

bp = Blueprint("callbacks", __name__, url_prefix="/v1")

_STATUSES = {"accepted", "approved", "rejected", "cancelled"}
_OPTIONAL = {"reference": 200, "reason": 2000}  # the store's column sizes


def _text(value: object, most: int, least: int = 0) -> bool:
    return isinstance(value, str) and least <= len(value) <= most and "\x00" not in value


@bp.post("/agencies/<agency_id>/callbacks")
def callback(agency_id: str) -> Response:
    c = ctx()
    agency = c.catalog.agencies.get(agency_id)
    if agency is None or not agency.callback_secret_ref:
        raise Problem(404, "Not found", f"no agency {agency_id[:64]!r} takes callbacks", type=TYPES + "not-found")
    header = request.headers.get("X-Satupintu-Signature", "")
    try:
        secret = agency.callback_secret()
    except ConfigError:
        raise Problem(503, "Service Unavailable", "callbacks of this agency are not configured") from None
    raw = raw_body()
    if not header:
        raise Problem(401, "Unauthorized", "the X-Satupintu-Signature header is missing", type=TYPES + "bad-signature")
    try:
        problem = signatures.verify(secret, raw, header)
    except signatures.MalformedSignature as exc:
        raise Problem(400, "Bad Request", str(exc), type=TYPES + "bad-signature") from None
    if problem:
        raise Problem(401, "Unauthorized", problem, type=TYPES + "bad-signature")
    body = json_body()
    errors = []
    if not isinstance(body, dict):
        body = {}
        errors.append({"path": "/", "message": "must be an object"})
    if not _text(body.get("request_id"), 64, least=1):
        errors.append({"path": "/request_id", "message": "required: a string of at most 64 characters"})
    if not isinstance(body.get("status"), str) or body["status"] not in _STATUSES:
        errors.append({"path": "/status", "message": f"required: one of {', '.join(sorted(_STATUSES))}"})
    for field, most in _OPTIONAL.items():
        if body.get(field) is not None and not _text(body[field], most):
            errors.append({"path": f"/{field}", "message": f"must be a string of at most {most} characters"})
    if errors:
        raise Problem(422, "Validation failed", "the callback does not match the schema", type=TYPES + "validation",
                      errors=errors)
    with c.engine.begin() as conn:
        req = conn.execute(select(t.requests).where(t.requests.c.id == body["request_id"],
                                                    t.requests.c.agency == agency.id)).first()
        if req is None:
            raise Problem(404, "Not found", f"agency {agency.id} has no request {body['request_id'][:64]!r}",
                          type=TYPES + "not-found")
        moment = records.now()
        # Each signature is accepted once, keyed on what it signed (agency, t, MAC) rather than
        # on the header's spelling; old entries are pruned after the tolerance window.
        conn.execute(delete(t.callback_signatures).where(
            t.callback_signatures.c.seen_at < moment - dt.timedelta(seconds=2 * signatures.TOLERANCE)))
        try:
            with conn.begin_nested():
                conn.execute(insert(t.callback_signatures).values(
                    signature=signatures.replay_key(agency.id, secret, raw, header), agency=agency.id,
                                                                  seen_at=moment))
        except IntegrityError:
            raise Problem(409, "Conflict", "this signature was used before (replay)", type=TYPES + "replay") from None
        app = records.application_row(conn, req.application_id)
        service = c.catalog.services.get(app.service)  # the reason is masked before the outbox keeps it
        reason = mask_free_text(body.get("reason"), pii_values(app.data, service.input_schema if service else None))
        event = {
            "event_id": uuid7_hex(), "type": "callback", "status": body["status"],
            "request_id": req.id, "application_id": req.application_id, "service": app.service,
            "step": req.step, "agency": agency.id, "reference": body.get("reference"), "reason": reason,
            "output": None, "attempt": None, "detail": {}, "origin": agency.id,
            "occurred_at": records.iso(moment),
        }
        records.enqueue(conn, exchange="status", routing_key=f"{app.service}.{agency.id}.{body['status']}",
                        body=event, headers={"application_id": app.id, "request_id": req.id})
    return Response(json.dumps({"received": True, "request_id": req.id}), status=202, mimetype="application/json")
