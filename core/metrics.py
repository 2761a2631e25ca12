"""The Prometheus metrics each role counts for itself, and how each role exposes them.

Where a figure can be read from the store or the broker (applications by status,
outbox lag, dead letters, queue depths, tracker lag) the gateway's ``/metrics`` computes
it at scrape time (``gateway.api.metrics``), so it is right whichever process answers.
What only a process sees as it happens is counted here:

* the gateway counts submissions; its gunicorn workers add up through
  prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, which
  ``satupintu serve`` sets to a fresh folder unless given one);
* workers time agency calls and count retries and dead letters; a worker is not
  reachable through the gateway, so it serves its own ``/metrics`` on
  ``SATUPINTU_METRICS_PORT`` when that is set (each worker process its own port).

Circuit-breaker states are not counted here: workers write them to snapshot files
(``broker.breaker``) and the gateway's ``/metrics`` reads them at scrape time.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app, multiprocess

from .settings import Settings

log = logging.getLogger("satupintu.metrics")
calls_log = logging.getLogger("satupintu.calls")  # one INFO line per agency call, with the message's ids

SUBMISSIONS = Counter(
    "satupintu_submissions", "POST /v1/applications answers by service and outcome",
    ["service", "outcome"])
AGENCY_CALL_SECONDS = Histogram(
    "satupintu_agency_call_duration_seconds", "Agency calls by agency, operation and outcome",
    ["agency", "operation", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
RETRIES = Counter("satupintu_retries", "Agency calls scheduled for another attempt", ["agency"])
DEAD_LETTERED = Counter("satupintu_dead_lettered", "Messages sent to the dead-letter queue", ["agency"])
REPUBLISHED = Counter("satupintu_republished_deliveries",
                      "Deliveries whose outcome the broker refused, published again (the delivery held)")
CHANNEL_RENEWALS = Counter("satupintu_publish_channel_renewals",
                           "Publishing channels a worker replaced after the broker refused messages on them")
# POST /v1/applications answers → outcome label.
_SUBMIT_OUTCOMES = {202: "accepted", 409: "conflict", 413: "too_large", 415: "invalid", 400: "invalid",
                    422: "invalid", 401: "unauthorized", 403: "forbidden"}


def submission_outcome(status_code: int) -> str:
    return _SUBMIT_OUTCOMES.get(status_code, "error" if status_code >= 500 else "other")


# ``SUBMISSIONS.labels(...)`` takes a lock and rebuilds its key on every call; it hands back
# the same child each time, so each one is kept here once made.
_submission_children: dict[tuple[str, int], Any] = {}


def count_submission(service: str, status_code: int) -> None:
    """``satupintu_submissions_total{service, outcome}`` + 1 for an answer of ``status_code``."""
    child = _submission_children.get((service, status_code))
    if child is None:
        child = SUBMISSIONS.labels(service, submission_outcome(status_code))
        _submission_children[(service, status_code)] = child
    child.inc()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def process_registry() -> CollectorRegistry:
    """The registry of this role's own counters: the files of every process in multiprocess mode."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    from prometheus_client import REGISTRY
    return REGISTRY


def scrape_allowed(authorization: str, token: str) -> bool:
    """True when ``authorization`` is ``Bearer <token>`` and a token is configured."""
    scheme, _, given = authorization.partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def expose(role: str, settings: Settings | None = None) -> int | None:
    """Serve this process's ``/metrics`` on ``SATUPINTU_METRICS_PORT`` when it is set; the port or None.

    Port 0 takes a free port and returns it.  A role holds no database, so it cannot check
    an ``ops`` key: its ``/metrics`` answers the scrape token (``SATUPINTU_METRICS_TOKEN``)
    only (without one configured, nobody; a warning says so).  ``/healthz`` answers anyone:
    the container's health check asks there.
    """
    settings = settings or Settings.from_env()
    if not settings.metrics_port:
        return None
    if not settings.metrics_token:
        log.warning("%s metrics refused to every scraper: set SATUPINTU_METRICS_TOKEN, the bearer token "
                    "scrapers send", role)
    metrics_app = make_wsgi_app(process_registry())
    token = settings.metrics_token

    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if not scrape_allowed(environ.get("HTTP_AUTHORIZATION", ""), token):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                ("WWW-Authenticate", 'Bearer realm="satupintu-metrics"')])
            return [b"send Authorization: Bearer <SATUPINTU_METRICS_TOKEN>\n"]
        return metrics_app(environ, start_response)

    server = make_server(settings.metrics_addr, int(settings.metrics_port), guarded, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name=f"{role}-metrics", daemon=True).start()
    port = server.server_port
    log.info("%s metrics at http://%s:%s/metrics", role, settings.metrics_addr, port)
    return port


class _QuietHandler(WSGIRequestHandler):
    """wsgiref's handler without a log line per scrape on stderr."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


# Children of AGENCY_CALL_SECONDS by (agency, operation, outcome label): ``labels()`` takes the
# histogram's lock and builds its key on every call; the catalog bounds the combinations.
_call_children: dict[tuple[str, str, str], Any] = {}


def observe_agency_call(agency: str, operation: str, kind: str, outcome: Any, seconds: float,
                        ids: dict[str, Any]) -> None:
    """Time one agency call and log it with the message's correlation ids; never raises."""
    try:
        label = getattr(getattr(outcome, "kind", None), "value", None) or str(outcome)
        if kind != "send":
            label = f"{kind}:{label}"
        key = (agency, operation, label)
        child = _call_children.get(key)
        if child is None:
            child = _call_children[key] = AGENCY_CALL_SECONDS.labels(agency, operation, label)
        child.observe(seconds)
        calls_log.info("%s %s.%s → %s in %.0f ms", kind, agency, operation, label, seconds * 1000,
                 extra={**ids, "agency": agency})
    except Exception:
        log.debug("could not record an agency call", exc_info=True)

