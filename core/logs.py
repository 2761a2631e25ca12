"""Logging as JSON lines: time, level, process role, logger, message and any ids passed in ``extra``.

Personal data never reaches a log line: every 16-digit NIK is masked to its first and
last four digits (``3171********0123``) in the whole line, message, ids and tracebacks.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from typing import Any

_IDS = ("application_id", "request_id", "agency", "traceparent", "step")

# A 16-digit NIK not part of a longer number (ids and hashes are hex, so rarely match).
_NIK = re.compile(r"(?<![0-9A-Za-z])(\d{4})\d{8}(\d{4})(?![0-9A-Za-z])")


def mask_pii(text: str) -> str:
    """``3171012345670123`` → ``3171********0123`` everywhere in ``text``."""
    return _NIK.sub(lambda m: m.group(1) + "********" + m.group(2), text)


def correlation(body: dict[str, Any] | None, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ids a log line about a message carries (pass as ``extra=``)."""
    body, headers = body or {}, headers or {}
    ids = {"application_id": body.get("application_id") or headers.get("application_id"),
           "request_id": body.get("request_id") or headers.get("request_id"),
           "agency": body.get("agency"), "step": body.get("step"), "traceparent": headers.get("traceparent")}
    return {k: v for k, v in ids.items() if v}


class JsonLines(logging.Formatter):
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
        for key in _IDS:
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return mask_pii(json.dumps(line, ensure_ascii=False, default=str))


def configure(role: str, level: str | None = None) -> None:
    import time
    logging.Formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines(role))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("SATUPINTU_LOG_LEVEL", "INFO")).upper())
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
