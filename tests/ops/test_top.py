"""``satupintu top``: the agency table as text, and its command line."""

from __future__ import annotations

from gateway.cli import parser
from gateway.ops.top import render


def test_the_table_has_a_row_per_agency_with_rates_and_latencies():
    doc = {"items": [
        {"id": "company-registry", "calls": 12, "success_rate": 0.75, "p50_ms": 12.4, "p95_ms": 15000,
         "queue_depth": 3, "consumers": 1, "open_requests": 2, "dead_letters": 1, "circuit": "open"},
        {"id": "municipality", "calls": 0, "success_rate": None, "p50_ms": None, "p95_ms": None,
         "queue_depth": None, "consumers": None, "open_requests": 0, "dead_letters": 0, "circuit": "n/a"},
    ]}
    lines = render(doc, now=0).splitlines()
    assert lines[1].split() == ["agency", "calls", "success", "p50", "p95", "queue", "consumers", "open", "dead",
                                "circuit"]
    assert lines[2].split() == ["company-registry", "12", "75.0%", "12ms", "15.0s", "3", "1", "2", "1", "open"]
    assert lines[3].split() == ["municipality", "0", "-", "-", "-", "-", "-", "0", "0", "n/a"]


def test_top_takes_once_and_an_interval():
    args = parser().parse_args(["top", "--once", "--interval", "5"])
    assert args.once and args.interval == 5 and args.func.__name__ == "cmd_top"
