"""The machine a run was made on, each scenario's headline figure, and the printed table."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any


def _command(*argv: str) -> str | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict[str, Any]:
    """``nproc``, memory, CPU model, load and the versions that matter."""
    from importlib.metadata import version
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    rabbit = _command("rabbitmqctl", "version")
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "memory": _command("free", "-h"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "kernel": platform.release(),
        "versions": {**{name: version(name) for name in ("pika", "gunicorn", "flask", "sqlalchemy")},
                     "rabbitmq": rabbit},
    }


def headline(result: dict[str, Any]) -> tuple[str, float, bool]:
    """(metric, value, higher is better) of a scenario result: what ``--repeat`` compares."""
    name = result["scenario"]
    if name == "submit":
        return "submissions/s", result["submit"]["per_second"], True
    if name in ("fast", "slow", "mixed", "naive"):
        return "bundles/s end to end", result["end_to_end"]["per_second"], True
    if name == "relay":
        return "confirmed messages/s", result["relay"]["per_second"], True
    if name == "backlog":
        return "requests drained/s", result.get("drain", {}).get("requests_per_second", 0.0), True
    if name == "big-store":
        return "lookup p99 ratio 1M/1k", result["p99_ratio"], False
    if name == "ceiling":
        return "bare Flask requests/s (gthread 2x8)", result["ceiling"]["gthread 2x8"]["per_second"], True
    raise ValueError(name)


def _spread(result: dict[str, Any]) -> str:
    values = result.get("headline", {}).get("values") or []
    if len(values) < 2:
        return ""
    return f" (runs: {', '.join(f'{v:g}' for v in values)})"


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"machine: {m['nproc']} cores, {m['cpu']}, load {m['load_average']}, python {m['python']}", ""]
    for r in report["results"]:
        metric, value, _ = headline(r)
        lines.append(f"== {r['scenario']}: {metric} = {value:g}{_spread(r)}")
        if "submit" in r:
            s = r["submit"]
            lines.append(f"   submissions     {s['per_second']:>9.1f}/s   p50 {s['p50_ms']:>7.1f} ms   "
                         f"p99 {s['p99_ms']:>7.1f} ms   ({s['requests']} ok, {s['errors']} errors, "
                         f"concurrency {r.get('concurrency')})")
        if "end_to_end" in r:
            e = r["end_to_end"]
            lines.append(f"   end to end      {e['per_second']:>9.1f}/s   p50 {e['p50_ms']:>7.1f} ms   "
                         f"p99 {e['p99_ms']:>7.1f} ms   ({e['bundles']} bundles in {e['seconds']} s, "
                         f"{e['statuses']}{', TIMED OUT' if e['timed_out'] else ''})")
            lines.append(f"   messages/bundle {r['messages_per_bundle']:>9}")
        if "relay" in r:
            x = r["relay"]
            lines.append(f"   relay           {x['per_second']:>9.1f} confirmed msgs/s  ({x['messages']} in "
                         f"{x['seconds']} s; relay CPU {x['cpu_seconds']} s, RSS {x['peak_rss_mb']} MB)")
        if "drain" in r:
            d = r["drain"]
            lines.append(f"   drain           {d['requests_per_second']:>9.1f} requests/s = "
                         f"{d['bundles_per_second']} bundles/s  ({r['requests']} requests in {d['seconds']} s; "
                         f"100,000 would take ~{d['extrapolated_100k_seconds']:g} s)")
        if "lookup_small" in r:
            for label, key in (("1,000 stored", "lookup_small"), (f"{r['stored']:,} stored", "lookup_big")):
                s = r[key]
                lines.append(f"   lookups, {label:<16} {s['per_second']:>8.1f}/s   p50 {s['p50_ms']:>6.2f} ms   "
                             f"p99 {s['p99_ms']:>6.2f} ms")
            lines.append(f"   p99 ratio       {r['p99_ratio']}   (seeded in {r['seed_seconds']} s, "
                         f"store {r['database_mb']} MB)")
        for label, c in r.get("ceiling", {}).items():
            lines.append(f"   {label:<15} {c['per_second']:>9.1f}/s   p50 {c['p50_ms']:>7.1f} ms   "
                         f"p99 {c['p99_ms']:>7.1f} ms   CPU {c['cpu_ms_per_request']} ms/request (gunicorn)")
        if "processes" in r:
            unit = r.get("cpu_unit", "bundle")
            lines.append(f"   CPU/{unit:<11} {r['cpu_ms_per_bundle']:>9} ms (Satu Pintu roles), "
                         f"{r['cpu_ms_per_bundle_all']} ms (with sandbox and RabbitMQ)")
            roles = "  ".join(f"{role} {p['peak_rss_mb']} MB/{p['cpu_seconds']} s"
                              for role, p in r["processes"].items())
            lines.append(f"   peak RSS / CPU  {roles}")
        lines.append("")
    return "\n".join(lines)
