"""WSGI middleware that logs one line per request, for ``python -m sandbox --verbose``.

Waitress writes no access log of its own; this one reads as werkzeug's did, plus the agency
and the time taken: ``tax-office 127.0.0.1 "POST / HTTP/1.1" 200 12.3 ms``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("sandbox.access")


class AccessLog:
    """Wraps an agency's WSGI app and logs each request once the app has answered."""

    def __init__(self, agency_id: str, app: Callable) -> None:
        self.agency_id = agency_id
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable
    ) -> Iterable[bytes]:
        started = time.perf_counter()
        status = ["-"]

        def recording(status_line: str, headers: list, exc_info: Any = None):
            status[0] = status_line.split(" ", 1)[0]
            return start_response(status_line, headers, exc_info)

        try:
            return self.app(environ, recording)
        finally:
            query = environ.get("QUERY_STRING", "")
            log.info(
                '%s %s "%s %s%s %s" %s %.1f ms',
                self.agency_id,
                environ.get("REMOTE_ADDR", "-"),
                environ.get("REQUEST_METHOD", ""),
                environ.get("PATH_INFO", ""),
                f"?{query}" if query else "",
                environ.get("SERVER_PROTOCOL", ""),
                status[0],
                (time.perf_counter() - started) * 1000,
            )
