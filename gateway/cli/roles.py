"""The long-running roles: ``serve``, ``relay``, ``worker``, ``tracker`` and ``sandbox``.

Each configures its logs, warns of unknown ``SATUPINTU_*`` variables, builds what it
needs from the one ``Settings`` object and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from core.settings import Settings

from .startup import open_store, read_catalog, report_unknown_variables, run_until_signal


def _begin(role: str, settings: Settings, *, metrics: bool = True) -> None:
    from core.logs import configure
    configure(role)
    report_unknown_variables(settings)
    if metrics:
        from core.metrics import expose
        expose(role)  # this process's /metrics on SATUPINTU_METRICS_PORT, when set


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import dataclasses

    from gateway.http_server import prepare_metrics_folder, serve
    prepare_metrics_folder()  # before prometheus-client is imported
    _begin("gateway", settings, metrics=False)  # the gateway's /metrics adds up its workers'
    if args.workers:
        settings = dataclasses.replace(settings, web_workers=args.workers)
    from gateway.api import create_app
    serve(settings, create_app(settings))
    return 0


def cmd_relay(_args: argparse.Namespace, settings: Settings) -> int:
    from gateway.relay import Relay
    _begin("relay", settings)
    relay = Relay(open_store(settings), read_catalog(settings), amqp_urls=settings.amqp_urls, namespace=settings.namespace,
                  heartbeat=settings.amqp_heartbeat)
    return run_until_signal(relay)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from broker.worker import Worker
    _begin("worker", settings)
    agencies = read_catalog(settings)
    unknown = [a for a in args.agency or [] if a not in agencies.agencies]
    if unknown:
        print(f"unknown agency {unknown[0]!r}; known: {', '.join(sorted(agencies.agencies))}", file=sys.stderr)
        return 2
    worker = Worker(agencies, settings, agencies=args.agency)
    worker.start()
    return run_until_signal(worker)


def cmd_tracker(_args: argparse.Namespace, settings: Settings) -> int:
    from gateway.notifier import Notifier
    from gateway.tracker import Tracker
    _begin("tracker", settings)
    store = open_store(settings)
    tracker = Tracker(store, read_catalog(settings), amqp_urls=settings.amqp_urls, namespace=settings.namespace,
                      heartbeat=settings.amqp_heartbeat)
    # Webhook deliveries run beside the tracker: same store, no broker.
    notifier = Notifier(store, settings=settings)
    thread = threading.Thread(target=notifier.run, name="notifier", daemon=True)
    thread.start()
    try:
        return run_until_signal(tracker)
    finally:
        notifier.stop()
        thread.join(15)


def cmd_sandbox(args: argparse.Namespace, _settings: Settings | None) -> int:
    """``python -m sandbox`` in this process's place: an independent program."""
    argv = [sys.executable, "-m", "sandbox", *args.sandbox_args]
    os.execv(argv[0], argv)
    return 0  # not reached
