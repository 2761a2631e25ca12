"""Server-rendered SVG: an application's step DAG and an agency's latency chart.

Presentation attributes only (no ``style=``), so the pages' Content-Security-Policy can
forbid inline styles; every text is escaped.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

STATUS_COLOURS = {
    "pending": "#9aa5b1", "queued": "#5b8def", "sent": "#3d6fd8", "accepted": "#8e6bd8",
    "approved": "#2f9e44", "rejected": "#e8590c", "failed": "#c92a2a", "skipped": "#adb5bd",
    "cancelled": "#495057", "retrying": "#f08c00",
}

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 180, 62, 60, 24, 12


def dag_svg(dag: dict[str, Any]) -> Markup:
    """Boxes per step, left to right by layer, arrows from each dependency."""
    nodes = dag["nodes"]
    if not nodes:
        return Markup("")
    layers: dict[int, list[dict[str, Any]]] = {}
    for node in nodes:
        layers.setdefault(node["layer"], []).append(node)
    pos = {}
    for layer, members in layers.items():
        for i, node in enumerate(members):
            pos[node["step"]] = (PAD + layer * (NODE_W + GAP_X), PAD + i * (NODE_H + GAP_Y))
    width = PAD * 2 + (max(layers) + 1) * NODE_W + max(layers) * GAP_X
    height = PAD * 2 + max(len(m) for m in layers.values()) * (NODE_H + GAP_Y) - GAP_Y
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" aria-label="step graph">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#6c757d"/></marker></defs>']
    for edge in dag["edges"]:
        (x1, y1), (x2, y2) = pos[edge["from"]], pos[edge["to"]]
        parts.append(f'<line x1="{x1 + NODE_W}" y1="{y1 + NODE_H / 2}" x2="{x2}" y2="{y2 + NODE_H / 2}" '
                     'stroke="#6c757d" stroke-width="1.5" marker-end="url(#arrow)"/>')
    for node in nodes:
        x, y = pos[node["step"]]
        shown = "retrying" if node.get("retrying") else node["status"]  # queued, yet waiting for its retry
        colour = STATUS_COLOURS.get(shown, "#868e96")
        parts.append(
            f'<g class="node" data-step="{escape(node["step"])}" data-status="{escape(node["status"])}">'
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="8" fill="#fff" stroke="{colour}" '
            'stroke-width="3"/>'
            f'<text x="{x + 10}" y="{y + 20}" font-size="14" font-weight="600" fill="#212529">'
            f'{escape(node["step"])}</text>'
            f'<text x="{x + 10}" y="{y + 38}" font-size="12" fill="#495057">{escape(node["agency"])}</text>'
            f'<text x="{x + 10}" y="{y + 54}" font-size="12" font-weight="600" fill="{colour}">'
            f'{escape(shown)}</text>'
            f'<title>{escape(node.get("title") or node["step"])}: {escape(shown)}, '
            f'{int(node["attempts"])} attempt(s)</title></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def latency_svg(series: list[dict[str, Any]], *, width: int = 240, height: int = 48) -> Markup:
    """p95 (line) and p50 (dots) per minute; an empty frame when there were no calls."""
    values = [p["p95_ms"] for p in series if p["p95_ms"] is not None]
    top = max(values, default=0) or 1.0
    step = width / max(len(series) - 1, 1)

    def y(v: float) -> float:
        return round(height - 4 - (v / top) * (height - 8), 1)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="latency" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="latency per minute, p95 up to {top:.0f} ms">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f8f9fa" stroke="#dee2e6"/>']
    points = [f"{round(i * step, 1)},{y(p['p95_ms'])}" for i, p in enumerate(series) if p["p95_ms"] is not None]
    if len(points) > 1:
        parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#d9480f" stroke-width="1.5"/>')
    for i, p in enumerate(series):
        if p["p50_ms"] is not None:
            parts.append(f'<circle cx="{round(i * step, 1)}" cy="{y(p["p50_ms"])}" r="1.8" fill="#1c7ed6">'
                         f'<title>{escape(p["minute"])}: p50 {p["p50_ms"]} ms, p95 {p["p95_ms"]} ms, '
                         f'{p["calls"]} call(s)</title></circle>')
    parts.append(f'<text x="{width - 4}" y="11" font-size="9" text-anchor="end" fill="#495057">'
                 f'{top:.0f} ms</text></svg>')
    return Markup("".join(parts))
