"""What every role does first: the store and catalog it needs, and a warning for each
``SATUPINTU_*`` variable no setting reads (a typo must not be silently ignored)."""

from __future__ import annotations

import gc
import re
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from core.settings import Settings, unknown_variables

# A variable the catalog's files name: ${NAME}, ${NAME:-default}, env:NAME.
CATALOG_VARIABLE = re.compile(r"SATUPINTU_[A-Z0-9_]+")


def catalog_variables(config_dir: str | Path) -> set[str]:
    """Every ``SATUPINTU_*`` name the files of the catalog folder mention."""
    names: set[str] = set()
    for path in Path(config_dir).rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".yml", ".json"}:
            names.update(CATALOG_VARIABLE.findall(path.read_text(encoding="utf-8", errors="replace")))
    return names


def report_unknown_variables(settings: Settings, env: Mapping[str, str] | None = None,
                             out: TextIO | None = None) -> list[str]:
    """Warn on ``out`` (stderr) of each ``SATUPINTU_*`` variable in ``env`` that neither a
    setting nor the catalog reads, with the nearest known name; the lines written."""
    lines = unknown_variables(env, also_known=catalog_variables(settings.config_dir))
    for line in lines:
        print(f"satupintu: warning: {line}", file=out or sys.stderr)
    return lines


def open_store(settings: Settings, *, migrated: bool = True):  # noqa: ANN201
    from gateway.store import make_engine
    from gateway.store.migrations import require_current
    store = make_engine(settings.database_url)
    if migrated:
        require_current(store)
    return store


def read_catalog(settings: Settings):  # noqa: ANN201
    from gateway.catalog import load_catalog
    return load_catalog(settings.config_dir, timezone=settings.timezone)


def run_until_signal(component: Any) -> int:
    """Run ``component.run()`` in the main thread; SIGTERM/SIGINT call ``component.stop()``."""
    def on_signal(_signum: int, _frame: Any) -> None:
        component.stop()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # What the role built to start (catalog, adapters and their zeep clients, the engine)
    # lives as long as the process: full collections need not walk it (decision 35).
    gc.freeze()
    component.run()
    return 0
