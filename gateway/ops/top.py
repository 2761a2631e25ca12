"""``satupintu top``: the per-agency table of ``/ops/api/agencies``, as terminal text."""

from __future__ import annotations

import time
from typing import Any

COLUMNS = (("agency", 18), ("calls", 6), ("success", 8), ("p50", 8), ("p95", 8), ("queue", 6),
           ("consumers", 9), ("open", 6), ("dead", 5), ("circuit", 9))


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}ms" if value < 10_000 else f"{value / 1000:.1f}s"


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def render(doc: dict[str, Any], *, now: float | None = None) -> str:
    """One screen: a header line, the column titles, a row per agency."""
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    lines = [f"satupintu top  {stamp}  (calls in the last hour; Ctrl-C to quit)",
             "  ".join(title.rjust(width) if i else title.ljust(width) for i, (title, width) in enumerate(COLUMNS))]
    for a in doc.get("items", []):
        rate = a.get("success_rate")
        values = (a["id"], _cell(a.get("calls")), "-" if rate is None else f"{rate * 100:.1f}%", _ms(a.get("p50_ms")),
                  _ms(a.get("p95_ms")), _cell(a.get("queue_depth")), _cell(a.get("consumers")),
                  _cell(a.get("open_requests")), _cell(a.get("dead_letters")), _cell(a.get("circuit")))
        lines.append("  ".join(v.rjust(w) if i else v[:w].ljust(w) for i, (v, (_t, w)) in enumerate(zip(values, COLUMNS))))
    if not doc.get("items"):
        lines.append("(no agencies in the catalog)")
    return "\n".join(lines)
