"""The client commands: ``submit``, ``status`` and ``top`` talk to a gateway over HTTP
through the front offices' own client library (``satupintu.client``), at ``SATUPINTU_URL``
(or ``http://SATUPINTU_BIND``) with the key ``SATUPINTU_API_KEY``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import requests

from core.domain.errors import SatupintuError
from core.settings import Settings
from satupintu.client import Client, Problem

from .progress import Progress


def connect(settings: Settings) -> Client:
    """A client of the configured gateway; a usage hint when there is no key."""
    if not settings.api_key:
        raise SatupintuError("set SATUPINTU_API_KEY (the key `satupintu run --demo` or `clients create` printed)")
    return Client(settings.url or f"http://{settings.bind}", settings.api_key, timeout=30, retries=2)


def unreachable(client: Client, exc: requests.RequestException) -> SatupintuError:
    return SatupintuError(f"the gateway at {client.base_url} does not answer: {exc}")


# The fields of a POST /v1/applications body (DESIGN §3).
BODY_FIELDS = ("service", "data", "reference", "documents", "notify")


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    bodies = []
    for path in args.files:
        try:
            body = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"{path}: cannot read a JSON body: {exc}", file=sys.stderr)
            return 2
        unknown = sorted(set(body) - set(BODY_FIELDS)) if isinstance(body, dict) else ["(not an object)"]
        if unknown:
            print(f"{path}: not a request body: unknown field {unknown[0]}; a body has {', '.join(BODY_FIELDS)}",
                  file=sys.stderr)
            return 2
        bodies.append(body)
    client = connect(settings)
    ids = []
    progress = Progress(len(bodies), "submitted")
    with client:
        for path, body in zip(args.files, bodies):
            try:
                app = client.submit(body.get("service"), body.get("data"), reference=body.get("reference"),
                                    documents=body.get("documents"), notify=body.get("notify"))
            except Problem as exc:
                print(f"{path}: {exc}", file=sys.stderr)
                for error in exc.errors:
                    print(f"  {error.get('path')}: {error.get('message')}", file=sys.stderr)
                return 1
            except requests.RequestException as exc:
                raise unreachable(client, exc) from exc
            ids.append(app.id)
            progress.update(len(ids))
        if not args.wait:
            print("\n".join(ids))
            return 0
        final = wait_for_decisions(client, ids, args.timeout)
    for app_id in ids:
        print(f"{app_id} {final.get(app_id, 'in_progress (timed out waiting)')}")
    return 0 if all(final.get(a) == "completed" for a in ids) else 1


def wait_for_decisions(client: Client, ids: list[str], timeout: float) -> dict[str, str]:
    """Poll every application until it is decided, or waits for a correction, or ``timeout``
    seconds passed: {id: status}."""
    final: dict[str, str] = {}
    progress = Progress(len(ids), "decided")
    deadline = time.monotonic() + timeout
    while len(final) < len(ids) and time.monotonic() < deadline:
        for app_id in ids:
            if app_id in final:
                continue
            try:
                app = client.application(app_id)
            except requests.RequestException as exc:
                raise unreachable(client, exc) from exc
            if app.decided or app.status == "action_required":  # a returned one waits for a correction
                final[app_id] = app.status
        progress.update(len(final))
        if len(final) < len(ids):
            time.sleep(0.5)
    return final


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as client:
        try:
            app = client.application(args.id)
            events = client.history(args.id)
        except Problem as exc:
            print(exc, file=sys.stderr)
            return 1
        except requests.RequestException as exc:
            raise unreachable(client, exc) from exc
    print(f"{app.id}  {app.service}  {app.status}  (created {app.created_at})")
    for r in app.requests:
        print(f"  {r.step:<20} {r.agency:<18} {r.status:<10} attempts={r.attempts} "
              f"ref={r.agency_reference or '-'} {r.reason or ''}")
    print("timeline:")
    for e in events:
        print(f"  {e['occurred_at']}  {e['type']:<12} {e['step'] or '':<16} {e['status'] or '':<10} "
              f"{e['cause'] or ''}")
    return 0


def cmd_top(args: argparse.Namespace, settings: Settings) -> int:
    """A live per-agency table from ``/ops/api/agencies`` (needs an ``ops`` key)."""
    from gateway.ops.top import render
    with connect(settings) as client:
        while True:
            try:
                table = render(client.ops_agencies())
            except Problem as exc:
                print(exc, file=sys.stderr)
                return 1
            except requests.RequestException as exc:
                raise unreachable(client, exc) from exc
            if args.once:
                print(table)
                return 0
            sys.stdout.write("\x1b[H\x1b[2J" + table + "\n")
            sys.stdout.flush()
            time.sleep(args.interval)
