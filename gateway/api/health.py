"""/healthz (the process answers) and /readyz (store and broker reachable).

Not ready is a 503 problem document (RFC 9457) whose ``detail`` says why, with the
``checks`` and ``circuits`` as extension members; ready is a 200 with the same two.
"""

from __future__ import annotations

import threading
import time

from flask import Blueprint, Response, json
from sqlalchemy import text

from broker.breaker import states as breaker_states
from broker.connection import connect
from core.domain.errors import BrokerUnavailable

from .context import ctx
from .problems import PROBLEM, TYPES

bp = Blueprint("health", __name__)

_broker_check = {"at": 0.0, "ok": False, "detail": ""}
_broker_lock = threading.Lock()
BROKER_CHECK_TTL = 2.0  # seconds a broker check is reused, so probes cannot flood RabbitMQ


@bp.get("/healthz")
def healthz() -> Response:
    return Response(json.dumps({"status": "ok"}), mimetype="application/json")


def _broker_ready() -> tuple[bool, str]:
    with _broker_lock:
        if time.monotonic() - _broker_check["at"] < BROKER_CHECK_TTL:
            return _broker_check["ok"], _broker_check["detail"]
        settings = ctx().settings
        try:
            # ``connect`` turns every way of failing to connect into BrokerUnavailable.
            connection = connect(settings.amqp_urls, name="satupintu-readyz", heartbeat=settings.amqp_heartbeat)
            connection.close()
            ok, detail = True, "reachable"
        except BrokerUnavailable as exc:
            ok, detail = False, str(exc)
        _broker_check.update(at=time.monotonic(), ok=ok, detail=detail)
        return ok, detail


@bp.get("/readyz")
def readyz() -> Response:
    checks = {}
    try:
        with ctx().engine.connect().execution_options(readonly=True) as conn:
            conn.execute(text("SELECT 1"))
        checks["store"] = {"ok": True, "detail": "reachable"}
    except Exception as exc:  # noqa: BLE001 - any store failure means "not ready"
        checks["store"] = {"ok": False, "detail": type(exc).__name__}
    ok, detail = _broker_ready()
    checks["broker"] = {"ok": ok, "detail": detail}
    # Circuit breakers as this machine's workers report them: detail for operators, not a
    # readiness condition (one agency being down must not take the gateway out of service).
    circuits = {agency: "closed" for agency in ctx().catalog.agencies}
    circuits.update(breaker_states(ctx().settings.state_dir))
    failing = [f"{name}: {check['detail']}" for name, check in checks.items() if not check["ok"]]
    if not failing:
        return Response(json.dumps({"status": "ready", "checks": checks, "circuits": circuits}),
                        mimetype="application/json")
    body = {"type": TYPES + "not-ready", "title": "Service Unavailable", "status": 503,
            "detail": "not ready: " + "; ".join(failing), "checks": checks, "circuits": circuits}
    return Response(json.dumps(body), status=503, mimetype=PROBLEM)
