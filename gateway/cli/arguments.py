"""The command line of DESIGN §5: every subcommand, its options, and the function it runs."""

from __future__ import annotations

import argparse
from typing import Any

from . import client, operations, roles, run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="satupintu", description="Satu Pintu: one door to many agencies.")
    sub = p.add_subparsers(dest="command", required=True)
    everything = sub.add_parser("run", help="everything in one supervised process tree")
    everything.add_argument("--demo", action="store_true", help="also the sandbox agencies and a demo client key")
    everything.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    everything.set_defaults(func=run.cmd_run)
    serve = sub.add_parser("serve", help="the HTTP gateway (gunicorn)")
    serve.add_argument("--workers", type=int, help="gunicorn worker processes (default SATUPINTU_WEB_WORKERS, 2)")
    serve.set_defaults(func=roles.cmd_serve)
    sub.add_parser("relay", help="publish the outbox").set_defaults(func=roles.cmd_relay)
    worker = sub.add_parser("worker", help="call agencies for queued requests")
    worker.add_argument("--agency", action="append", help="only this agency (repeatable)")
    worker.set_defaults(func=roles.cmd_worker)
    sub.add_parser("tracker", help="apply status events").set_defaults(func=roles.cmd_tracker)
    sandbox = sub.add_parser("sandbox", help="the sandbox agencies (arguments go to `python -m sandbox`)")
    sandbox.add_argument("sandbox_args", nargs=argparse.REMAINDER)
    sandbox.set_defaults(func=roles.cmd_sandbox)
    _client_commands(sub)
    _operator_commands(sub)
    return p


def _client_commands(sub: Any) -> None:
    submit = sub.add_parser("submit", help="submit request bodies from files")
    submit.add_argument("files", nargs="+", metavar="FILE")
    submit.add_argument("--wait", action="store_true", help="wait until each is decided")
    submit.add_argument("--timeout", type=float, default=300)
    submit.set_defaults(func=client.cmd_submit)
    status = sub.add_parser("status", help="an application and its timeline")
    status.add_argument("id")
    status.set_defaults(func=client.cmd_status)
    top = sub.add_parser("top", help="a live per-agency table (needs an ops key)")
    top.add_argument("--once", action="store_true", help="print the table once and exit")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    top.set_defaults(func=client.cmd_top)


def _operator_commands(sub: Any) -> None:
    dl = sub.add_parser("dead-letters", help="list or replay dead letters")
    dl_sub = dl.add_subparsers(dest="dl_command", required=True)
    dl_list = dl_sub.add_parser("list")
    dl_list.add_argument("--agency")
    dl_replay = dl_sub.add_parser("replay")
    dl_replay.add_argument("id", nargs="?", type=int)
    dl_replay.add_argument("--agency")
    dl_replay.add_argument("--all", action="store_true")
    dl.set_defaults(func=operations.cmd_dead_letters)
    cl = sub.add_parser("clients", help="API clients (front offices)")
    cl_sub = cl.add_subparsers(dest="clients_command", required=True)
    create = cl_sub.add_parser("create")
    create.add_argument("name")
    create.add_argument("--scope", action="append", required=True, choices=["submit", "read", "ops"])
    create.add_argument("--webhook-url")
    cl_sub.add_parser("list")
    for name in ("revoke", "rotate"):
        cl_sub.add_parser(name).add_argument("name")
    cl.set_defaults(func=operations.cmd_clients)
    audit = sub.add_parser("audit", help="the tamper-evident event log")
    audit.add_argument("audit_command", choices=["verify"])
    audit.add_argument("--anchor", metavar="ID:DIGEST", help="also check the chains against an anchor printed before")
    audit.set_defaults(func=operations.cmd_audit_verify)
    config = sub.add_parser("config", help="the catalog")
    config.add_argument("config_command", choices=["check"])
    config.set_defaults(func=operations.cmd_config_check)
    ns = sub.add_parser("namespace", help="a namespace's queues and exchanges on RabbitMQ")
    ns_sub = ns.add_subparsers(dest="namespace_command", required=True)
    ns_delete = ns_sub.add_parser("delete", help="delete them (refused while messages are queued)")
    ns_delete.add_argument("namespace")
    ns_delete.add_argument("--force", action="store_true", help="delete queued messages too")
    ns_delete.set_defaults(func=operations.cmd_namespace_delete)
    db = sub.add_parser("db", help="the store")
    db.add_argument("db_command", choices=["upgrade", "rehash-niks"],
                    help="upgrade: apply missing migrations; rehash-niks: rebuild the NIK search index "
                         "with the current SATUPINTU_NIK_HASH_KEY")
    db.set_defaults(func=operations.cmd_db)
