"""Test copies of the demo catalog with short retry delays, for reliability tests.

The copy lives in the test's tmp dir (``SATUPINTU_CONFIG`` points at it), so tests can
tune retries, breakers and limits without touching ``config/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]

def reliability_catalog(folder: Path, *, retry: dict[str, Any] | None = None,
                        breaker: dict[str, Any] | None = None, poll: dict[str, Any] | None = None,
                        per_agency: dict[str, dict[str, Any]] | None = None) -> Path:
    """Copy ``config/`` to ``folder`` with short delays and lookup-before-resend everywhere.

    ``per_agency`` merges extra top-level keys into one agency's file (e.g. ``limits``,
    ``maintenance``, ``retry``).
    """
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(REPO / "config", folder)
    for path in sorted((folder / "agencies").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        doc["retry"] = dict(retry or {"max_attempts": 4, "delays": [0.2, 0.5, 1]})
        doc["circuit_breaker"] = dict(breaker or {"failure_threshold": 5, "reset_after": 1})
        doc["timeouts"] = {"connect": 2, "read": 10}
        if doc.get("decisions") == "poll":
            doc["poll"] = dict(poll or {"interval": 0.2, "backoff": 2, "max_interval": 2, "deadline": 600})
        if any("lookup" in op for op in doc["operations"].values()):
            doc["idempotency"] = dict(doc.get("idempotency") or {}, lookup_before_resend=True)
        doc.update((per_agency or {}).get(doc["id"], {}))
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder
