"""Logging as JSON lines: time, level, process role, logger, message and any ids passed in ``extra``.

Personal data never reaches a log line: the handler ``configure`` installs masks every
record (``core.masking.PersonalDataFilter``: NIKs, e-mail addresses, in the message and
the traceback) before it is formatted.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from .masking import LOG_IDS, PersonalDataFilter
from .settings import Settings


def correlation(body: dict[str, Any] | None, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ids a log line about a message carries (pass as ``extra=``)."""
    body, headers = body or {}, headers or {}
    ids = {"application_id": body.get("application_id") or headers.get("application_id"),
           "request_id": body.get("request_id") or headers.get("request_id"),
           "agency": body.get("agency"), "step": body.get("step"), "traceparent": headers.get("traceparent")}
    return {k: v for k, v in ids.items() if v}


class JsonLines(logging.Formatter):
    """One JSON object a line, times in UTC."""

    converter = time.gmtime

    def __init__(self, role: str):
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "role": self.role,
            "pid": os.getpid(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in LOG_IDS:
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["error"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def handler(role: str, stream: Any = None) -> logging.Handler:
    """A handler writing masked JSON lines to ``stream`` (standard error by default)."""
    out = logging.StreamHandler(stream or sys.stderr)
    out.addFilter(PersonalDataFilter())
    out.setFormatter(JsonLines(role))
    return out


def configure(role: str, level: str | None = None) -> None:
    """Every record of this process as a masked JSON line on standard error, at ``level``
    (default ``Settings.log_level``)."""
    root = logging.getLogger()
    root.handlers[:] = [handler(role)]
    root.setLevel((level or Settings.from_env().log_level).upper())
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
