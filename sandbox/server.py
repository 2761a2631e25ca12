"""Builds the four agencies and serves each on its own port, one thread per server."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from . import company_registry, municipality
from .agency import Agency
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


class QuietRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler without the per-request access log line."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class SandboxSettings:
    """How to run the sandbox; knobs are per agency id, as in ``--faults``."""

    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    knobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    verbose: bool = False


def build_app(agency: Agency, scheduler: Scheduler):
    """The WSGI app of one agency, behind its front desk."""
    if agency.id == "company-registry":
        inner = company_registry.create_app(agency)
    elif agency.id == "municipality":
        inner = municipality.create_app(agency, scheduler)
    else:
        from . import soap_desk  # spyne is only needed for the SOAP agencies

        inner = soap_desk.create_app(agency)
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
        self._servers: list[BaseWSGIServer] = []
        self._threads: list[threading.Thread] = []
        self._scheduler: Scheduler | None = None

    def start(self) -> dict[str, str]:
        """Bind every server (port 0 = any free port), serve them, return their base URLs."""
        logging.getLogger("werkzeug").setLevel(
            logging.INFO if self.settings.verbose else logging.WARNING
        )
        handler = WSGIRequestHandler if self.settings.verbose else QuietRequestHandler
        self._scheduler = Scheduler()
        for agency_id, agency in self.agencies.items():
            app = build_app(agency, self._scheduler)
            server = make_server(
                self.settings.host,
                self.settings.ports.get(agency_id, DEFAULT_PORTS[agency_id]),
                app,
                threaded=True,
                request_handler=handler,
            )
            self._servers.append(server)
            self.urls[agency_id] = (
                f"http://{_url_host(self.settings.host)}:{server.server_port}"
            )
        for agency_id, server in zip(self.agencies, self._servers):
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},  # so stop() is quick
                name=f"sandbox-{agency_id}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return dict(self.urls)

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._scheduler:
            self._scheduler.stop()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
