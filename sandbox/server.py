"""Builds the four agencies and serves each on its own port, with its own thread pool."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from . import company_registry, municipality
from .access_log import AccessLog
from .agency import Agency
from .agency_server import AgencyServer
from .front_desk import FrontDesk
from .knobs import KnobError
from .scheduler import Scheduler

AGENCY_IDS = ("company-registry", "municipality", "tax-office", "social-security")
DEFAULT_PORTS = {
    "company-registry": 8301,
    "municipality": 8302,
    "tax-office": 8303,
    "social-security": 8304,
}
PROTOCOLS = {
    "company-registry": "rest",
    "municipality": "rest",
    "tax-office": "soap",
    "social-security": "soap",
}
# How long stop() lets calls in flight finish before it closes their connections.
STOP_GRACE = 2.0


@dataclass
class SandboxSettings:
    """How to run the sandbox; knobs are per agency id, as in ``--faults``."""

    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    knobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    verbose: bool = False
    # Threads answering calls, per agency: the most calls one agency works on at once
    # (a call slowed by ``latency_ms`` holds its thread while it sleeps); further calls
    # wait in line. 192: the bench points three agencies (registry-a/b/c, 64 calls in
    # flight each) at the company registry. An idle thread costs about 16 KB.
    threads: int = 192
    # Open connections per agency before it stops accepting more; workers keep up to
    # ``limits.concurrency`` idle connections per agency in their pools.
    connection_limit: int = 1000


def build_app(agency: Agency, scheduler: Scheduler) -> FrontDesk:
    """The WSGI app of one agency, behind its front desk."""
    if agency.id == "company-registry":
        inner = company_registry.create_app(agency)
    elif agency.id == "municipality":
        inner = municipality.create_app(agency, scheduler)
    else:
        from . import soap_desk  # spyne is only needed for the SOAP agencies

        return FrontDesk(agency, soap_desk.create_app(agency))
    return FrontDesk(agency, inner)


class Sandbox:
    """All four agencies; ``start()`` binds and serves, ``stop()`` shuts them down."""

    def __init__(self, settings: SandboxSettings) -> None:
        unknown = set(settings.knobs) - set(AGENCY_IDS)
        if unknown:
            raise KnobError(
                f"unknown agency id(s) {sorted(unknown)} in faults; known: {', '.join(AGENCY_IDS)}"
            )
        self.settings = settings
        self.agencies = {
            agency_id: Agency(
                agency_id, PROTOCOLS[agency_id], settings.knobs.get(agency_id)
            )
            for agency_id in AGENCY_IDS
        }
        self.urls: dict[str, str] = {}
        self._servers: list[AgencyServer] = []
        self._scheduler: Scheduler | None = None

    def start(self) -> dict[str, str]:
        """Bind every server (port 0 = a port the kernel picks), serve them, return their base URLs."""
        settings = self.settings
        # Waitress logs queue depths and dropped clients as warnings: part of the act here.
        logging.getLogger("waitress").setLevel(
            logging.INFO if settings.verbose else logging.ERROR
        )
        self._scheduler = Scheduler()
        try:
            for agency_id, agency in self.agencies.items():
                desk = build_app(agency, self._scheduler)
                server = AgencyServer(
                    agency_id,
                    AccessLog(agency_id, desk) if settings.verbose else desk,
                    settings.host,
                    settings.ports.get(agency_id, DEFAULT_PORTS[agency_id]),
                    threads=settings.threads,
                    connection_limit=settings.connection_limit,
                )
                self._servers.append(server)
                port = server.start()
                self.urls[agency_id] = f"http://{_url_host(settings.host)}:{port}"
        except BaseException:
            self.stop()
            raise
        return dict(self.urls)

    def stop(self) -> None:
        """Answer the calls in flight (for up to ``STOP_GRACE`` seconds), then close all."""
        deadline = time.monotonic() + STOP_GRACE
        for server in self._servers:
            server.begin_stop()
        for server in self._servers:
            server.stop(deadline)
        self._servers.clear()
        if self._scheduler:
            self._scheduler.stop()
            self._scheduler = None


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
