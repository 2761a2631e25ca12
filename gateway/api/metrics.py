"""GET /metrics: Prometheus text format.

Figures that must be right however many gunicorn workers serve the app (applications by
status, outbox lag) are read from the store at scrape time by a custom collector, so
they never depend on which worker answers the scrape.
"""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from ..store import records
from ..store import tables as t
from .context import ctx

bp = Blueprint("metrics", __name__)


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
        yield from (by_status, requests, lag, unsent, dead)


@bp.get("/metrics")
def metrics() -> Response:
    registry = CollectorRegistry()
    registry.register(StoreCollector(ctx().engine))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
