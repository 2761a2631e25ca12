"""The client commands: ``submit``, ``status`` and ``top`` talk to a gateway over HTTP
(``SATUPINTU_URL``, or ``http://SATUPINTU_BIND``) with the key ``SATUPINTU_API_KEY``."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from core.domain.errors import SatupintuError
from core.settings import Settings


def _api(settings: Settings, method: str, path: str, *, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    base = (settings.url or f"http://{settings.bind}").rstrip("/")
    key = settings.api_key
    if not key:
        raise SatupintuError("set SATUPINTU_API_KEY (the key `satupintu run --demo` or `clients create` printed)")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, {"detail": exc.reason}
    except OSError as exc:
        raise SatupintuError(f"the gateway at {base} does not answer: {exc}") from exc


def _progress(done: int, total: int, label: str) -> None:
    if not sys.stderr.isatty() and total <= 1:
        return
    width = 30
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label}   ")
    sys.stderr.flush()
    if done == total:
        sys.stderr.write("\n")


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    import uuid
    ids = []
    for i, path in enumerate(args.files):
        try:
            body = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"{path}: cannot read a JSON body: {exc}", file=sys.stderr)
            return 2
        status, doc = _api(settings, "POST", "/v1/applications", body=body, headers={"Idempotency-Key": uuid.uuid4().hex})
        if status != 202:
            print(f"{path}: {status} {json.dumps(doc)}", file=sys.stderr)
            return 1
        ids.append(doc["id"])
        if len(args.files) == 1:
            print(doc["id"])
        _progress(i + 1, len(args.files), "submitted")
    if not args.wait:
        if len(args.files) > 1:
            print("\n".join(ids))
        return 0
    final: dict[str, str] = {}
    deadline = time.monotonic() + args.timeout
    while len(final) < len(ids) and time.monotonic() < deadline:
        for app_id in ids:
            if app_id in final:
                continue
            status, doc = _api(settings, "GET", f"/v1/applications/{app_id}")
            if status == 200 and doc["status"] != "in_progress":
                final[app_id] = doc["status"]
        _progress(len(final), len(ids), "decided")
        if len(final) < len(ids):
            time.sleep(0.5)
    for app_id in ids:
        print(f"{app_id} {final.get(app_id, 'in_progress (timed out waiting)')}")
    return 0 if all(final.get(a) == "completed" for a in ids) else 1


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    status, doc = _api(settings, "GET", f"/v1/applications/{args.id}")
    if status != 200:
        print(f"{status} {doc.get('detail') if isinstance(doc, dict) else doc}", file=sys.stderr)
        return 1
    print(f"{doc['id']}  {doc['service']}  {doc['status']}  (created {doc['created_at']})")
    for r in doc["requests"]:
        print(f"  {r['step']:<20} {r['agency']:<18} {r['status']:<10} attempts={r['attempts']} "
              f"ref={r['agency_reference'] or '-'} {r['reason'] or ''}")
    status, hist = _api(settings, "GET", f"/v1/applications/{args.id}/history")
    if status == 200:
        print("timeline:")
        for e in hist["events"]:
            print(f"  {e['occurred_at']}  {e['type']:<12} {e['step'] or '':<16} {e['status'] or '':<10} "
                  f"{e['cause'] or ''}")
    return 0


def cmd_top(args: argparse.Namespace, settings: Settings) -> int:
    """A live per-agency table from ``/ops/api/agencies`` (needs an ``ops`` key)."""
    from gateway.ops.top import render
    while True:
        status, doc = _api(settings, "GET", "/ops/api/agencies")
        if status != 200:
            print(f"{status} {doc.get('detail') if isinstance(doc, dict) else doc}", file=sys.stderr)
            return 1
        table = render(doc)
        if args.once:
            print(table)
            return 0
        sys.stdout.write("\x1b[H\x1b[2J" + table + "\n")
        sys.stdout.flush()
        time.sleep(args.interval)
