"""/healthz (the process answers), /readyz (store and broker reachable), /metrics."""

from __future__ import annotations

import threading
import time

from flask import Blueprint, Response, json
from sqlalchemy import text

from broker.breaker import states as breaker_states
from broker.connection import connect
from core.domain.errors import BrokerUnavailable

from .context import ctx

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
        try:
            connection = connect(ctx().settings.amqp_urls, name="satupintu-readyz")
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
    ready = all(c["ok"] for c in checks.values())
    # Circuit breakers as this machine's workers report them: detail for operators, not a
    # readiness condition (one agency being down must not take the gateway out of service).
    circuits = {agency: "closed" for agency in ctx().catalog.agencies}
    circuits.update(breaker_states())
    return Response(json.dumps({"status": "ready" if ready else "not ready", "checks": checks,
                                "circuits": circuits}),
                    status=200 if ready else 503, mimetype="application/json")
