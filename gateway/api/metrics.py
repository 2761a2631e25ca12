"""GET /metrics: Prometheus text format.

Figures that must be right however many gunicorn workers serve the app are read at
scrape time: applications by status, outbox lag and dead letters from the store; queue
depths and the tracker's backlog from the broker (cached a few seconds).  The gateway's
own counters (submissions) live in prometheus-client's multiprocess files when
``PROMETHEUS_MULTIPROC_DIR`` is set (``satupintu serve`` sets it), so any worker's
answer adds up all of them.  Workers, relays and trackers serve their own counters on
``SATUPINTU_METRICS_PORT`` (see ``core/metrics.py`` and docs/operations.md).  Every scrape
needs a bearer credential: an ``ops`` key or the scrape token ``SATUPINTU_METRICS_TOKEN``.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from werkzeug.exceptions import HTTPException

from core import metrics as process_metrics

from ..store import records
from ..store import tables as t
from .context import authenticate, ctx
from .problems import TYPES, Problem

bp = Blueprint("metrics", __name__)

CIRCUIT_VALUES = {"closed": 0, "half-open": 1, "half_open": 1, "open": 2}


class StoreCollector:
    def __init__(self, engine):  # noqa: ANN001
        self.engine = engine

    def collect(self):  # noqa: ANN201
        by_status = GaugeMetricFamily("satupintu_applications", "Applications by service and status",
                                      labels=["service", "status"])
        requests = GaugeMetricFamily("satupintu_requests", "Agency requests by agency and status",
                                     labels=["agency", "status"])
        lag = GaugeMetricFamily("satupintu_outbox_lag_seconds", "Age of the oldest unsent outbox row")
        unsent = GaugeMetricFamily("satupintu_outbox_unsent", "Outbox rows not yet confirmed by the broker")
        dead = GaugeMetricFamily("satupintu_dead_letters_open", "Dead letters not replayed", labels=["agency"])
        tracker_lag = GaugeMetricFamily(
            "satupintu_tracker_lag_seconds",
            "How late the tracker recorded the newest worker event (recorded_at - occurred_at)")
        with self.engine.connect().execution_options(readonly=True) as conn:
            for service, status, n in conn.execute(select(t.applications.c.service, t.applications.c.status,
                                                          func.count()).group_by(t.applications.c.service,
                                                                                 t.applications.c.status)):
                by_status.add_metric([service, status], n)
            for agency, status, n in conn.execute(select(t.requests.c.agency, t.requests.c.status, func.count())
                                                  .group_by(t.requests.c.agency, t.requests.c.status)):
                requests.add_metric([agency, status], n)
            lag.add_metric([], records.oldest_unsent_age(conn))
            unsent.add_metric([], conn.execute(select(func.count()).select_from(t.outbox)
                                               .where(t.outbox.c.sent_at.is_(None))).scalar() or 0)
            for agency, n in conn.execute(select(t.dead_letters.c.agency, func.count())
                                          .where(t.dead_letters.c.replayed_at.is_(None))
                                          .group_by(t.dead_letters.c.agency)):
                dead.add_metric([agency], n)
            from ..ops.queries import tracker_lag as newest_event_lag
            tracker_lag.add_metric([], newest_event_lag(conn) or 0.0)
        yield from (by_status, requests, lag, unsent, dead, tracker_lag)


class BrokerCollector:
    """Depth of every queue of the namespace, from passive declares (cached a few seconds)."""

    def __init__(self, settings, catalog):  # noqa: ANN001
        self.settings, self.catalog = settings, catalog

    def collect(self):  # noqa: ANN201
        from ..ops.queues import snapshot
        snap = snapshot(self.settings, self.catalog)
        up = GaugeMetricFamily("satupintu_broker_up", "1 when the gateway reaches RabbitMQ")
        up.add_metric([], 1 if snap.ok else 0)
        agency = GaugeMetricFamily("satupintu_agency_queue_depth", "Messages waiting on each agency queue",
                                   labels=["agency"])
        consumers = GaugeMetricFamily("satupintu_agency_queue_consumers", "Workers consuming each agency queue",
                                      labels=["agency"])
        tracker = GaugeMetricFamily("satupintu_tracker_queue_depth", "Status events waiting for the tracker")
        dead = GaugeMetricFamily("satupintu_dead_queue_depth", "Dead-lettered messages not yet recorded")
        for q in snap.queues:
            if q.messages is None:
                continue
            if q.kind == "agency":
                agency.add_metric([q.agency], q.messages)
                consumers.add_metric([q.agency], q.consumers or 0)
            elif q.kind == "tracker":
                tracker.add_metric([], q.messages)
            elif q.kind == "dead":
                dead.add_metric([], q.messages)
        circuit = GaugeMetricFamily("satupintu_circuit_state",
                                    "Circuit breaker per agency as workers report it: 0 closed, 1 half-open, 2 open",
                                    labels=["agency"])
        from ..ops.queries import circuit_states
        for name, state in sorted(circuit_states().items()):
            circuit.add_metric([name], CIRCUIT_VALUES.get(state, -1))
        yield from (up, agency, consumers, tracker, dead, circuit)


@bp.get("/metrics")
def metrics() -> Response:
    """The scrape: for the scrape token (``SATUPINTU_METRICS_TOKEN``) or an ``ops`` key only."""
    c = ctx()
    if not process_metrics.scrape_allowed(request.headers.get("Authorization", ""), c.settings.metrics_token):
        client = authenticate(c)
        if "ops" not in client.scopes:
            raise Problem(403, "Forbidden", "/metrics needs an ops key or the scrape token", type=TYPES + "forbidden")
    registry = CollectorRegistry()
    registry.register(StoreCollector(c.engine))
    registry.register(BrokerCollector(c.settings, c.catalog))
    body = generate_latest(registry) + generate_latest(process_metrics.process_registry())
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


_NOT_PARSED = object()


@bp.after_app_request
def count_submissions(response: Response) -> Response:
    """``satupintu_submissions_total{service, outcome}`` for every POST /v1/applications."""
    req = request
    if req.method == "POST" and req.path == "/v1/applications":
        service = "unknown"
        try:
            body = g.get("submission", _NOT_PARSED)
            if body is _NOT_PARSED:
                body = json.loads(req.get_data(cache=True) or b"null")
            if isinstance(body, dict) and body.get("service") in ctx().catalog.services:
                service = body["service"]
        except (ValueError, TypeError, RecursionError, HTTPException):  # hostile bodies: 413, deep, unhashable
            pass
        process_metrics.count_submission(service, response.status_code)
    return response
