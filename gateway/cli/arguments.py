"""The command line of DESIGN §5: every subcommand, its options, and the function it runs."""

from __future__ import annotations

import argparse
from typing import Any

from . import calendar_check, client, config_check, operations, roles, run

ENVIRONMENT = """\
environment:
  SATUPINTU_URL      the gateway the client commands talk to (default http://SATUPINTU_BIND,
                     i.e. http://127.0.0.1:8080)
  SATUPINTU_API_KEY  the API key they send (printed by `satupintu run --demo` or `clients create`)
  SATUPINTU_CONFIG   the catalog folder (default ./config); every variable: README.md

exit status: 0 success, 1 a failed check, 2 a usage error"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="satupintu", description="Satu Pintu: one door to many agencies.",
                                epilog=ENVIRONMENT, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A subcommand whose --help shows its purpose and the environment it reads."""
        return sub.add_parser(name, help=text, description=text, epilog=ENVIRONMENT,
                              formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    everything = command("run", "everything in one supervised process tree")
    everything.add_argument("--demo", action="store_true", help="also the sandbox agencies and the demo client's key")
    everything.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    everything.set_defaults(func=run.cmd_run)
    serve = command("serve", "the HTTP gateway (gunicorn)")
    serve.add_argument("--workers", type=int, help="gunicorn worker processes (default SATUPINTU_WEB_WORKERS, 2)")
    serve.set_defaults(func=roles.cmd_serve)
    command("relay", "publish the outbox").set_defaults(func=roles.cmd_relay)
    worker = command("worker", "call agencies for queued requests")
    worker.add_argument("--agency", action="append", help="only this agency (repeatable; default every agency)")
    worker.set_defaults(func=roles.cmd_worker)
    command("tracker", "apply status events").set_defaults(func=roles.cmd_tracker)
    sandbox = command("sandbox", "the sandbox agencies (arguments go to `python -m sandbox`)")
    sandbox.add_argument("sandbox_args", nargs=argparse.REMAINDER)
    sandbox.set_defaults(func=roles.cmd_sandbox)
    _client_commands(command)
    _operator_commands(command)
    return p


def _client_commands(command: Any) -> None:
    submit = command("submit", "submit request bodies (POST /v1/applications) from JSON files")
    submit.add_argument("files", nargs="+", metavar="FILE")
    submit.add_argument("--wait", action="store_true", help="wait until each is decided; exit 1 unless all completed")
    submit.add_argument("--timeout", type=float, default=300, metavar="SECONDS",
                        help="with --wait: how long to wait for the decisions, in seconds (default 300)")
    submit.set_defaults(func=client.cmd_submit)
    status = command("status", "an application, its requests and its timeline")
    status.add_argument("id", metavar="ID")
    status.set_defaults(func=client.cmd_status)
    top = command("top", "a live per-agency table (needs an ops key)")
    top.add_argument("--once", action="store_true", help="print the table once and exit")
    top.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                     help="seconds between refreshes (default 2)")
    top.set_defaults(func=client.cmd_top)


def _operator_commands(command: Any) -> None:
    dl = command("dead-letters", "list or replay dead letters (works on the store: SATUPINTU_DATABASE_URL)")
    dl_sub = dl.add_subparsers(dest="dl_command", required=True, metavar="list|replay")
    dl_list = dl_sub.add_parser("list", help="the open dead letters, oldest first",
                                description="The open (not yet replayed) dead letters, oldest first, fitted "
                                            "to the terminal's width.")
    dl_list.add_argument("--agency", help="only this agency's")
    dl_list.add_argument("--json", action="store_true", help="one JSON document: {items: [...]}, nothing cut")
    dl_replay = dl_sub.add_parser("replay", help="send dead letters to their agency again",
                                  description="Put the chosen dead letters' requests back in their agency's "
                                              "queue (attempts start again); a dead letter is replayed once.")
    dl_replay.add_argument("id", nargs="?", type=int, metavar="ID", help="the dead letter's id (from `list`)")
    dl_replay.add_argument("--agency", help="every open dead letter of this agency")
    dl_replay.add_argument("--all", action="store_true", help="every open dead letter")
    dl.set_defaults(func=operations.cmd_dead_letters)
    cl = command("clients", "API clients (front offices) and their keys")
    cl_sub = cl.add_subparsers(dest="clients_command", required=True, metavar="create|list|revoke|rotate|webhook-secret")
    create = cl_sub.add_parser("create", help="a new client; prints its key, which is shown only this once",
                               description="Create a client and print its key on stdout, alone on one line. "
                                           "The store keeps only a hash: the key is shown only this once.")
    create.add_argument("name")
    create.add_argument("--scope", action="append", required=True, choices=["submit", "read", "ops"],
                        help="a scope (repeatable)")
    create.add_argument("--webhook-url", help="where status changes of its applications are posted")
    cl_sub.add_parser("list", help="every client, its scopes, active or revoked")
    for name, text in (("revoke", "the client's key stops working"),
                       ("rotate", "a new key for the client (printed once); the old one stops working"),
                       ("webhook-secret", "a new webhook secret for the client (printed once); webhooks are "
                                          "signed with it from now on")):
        cl_sub.add_parser(name, help=text, description=text).add_argument("name")
    cl.set_defaults(func=operations.cmd_clients)
    audit = command("audit", "the tamper-evident event log")
    audit.add_argument("audit_command", choices=["verify"])
    audit.add_argument("--anchor", metavar="ID:DIGEST", help="also check the chains against an anchor printed before")
    audit.set_defaults(func=operations.cmd_audit_verify)
    config = command("config", "check the catalog: files, mappings, calendar, and that every agency answers")
    config.add_argument("config_command", choices=["check"])
    config.add_argument("--offline", action="store_true", help="do not contact the agencies")
    config.set_defaults(func=config_check.cmd_config_check)
    calendar = command("calendar", "the working-day calendar (national holidays and the catalog's calendar.yaml)")
    calendar.add_argument("calendar_command", choices=["check"])
    calendar.add_argument("year", type=int, metavar="YEAR", help="list this year's non-working days")
    calendar.set_defaults(func=calendar_check.cmd_calendar_check)
    ns = command("namespace", "a namespace's queues and exchanges on RabbitMQ")
    ns_sub = ns.add_subparsers(dest="namespace_command", required=True, metavar="delete")
    ns_delete = ns_sub.add_parser("delete", help="delete them (refused while messages are queued)")
    ns_delete.add_argument("namespace")
    ns_delete.add_argument("--force", action="store_true", help="delete queued messages too")
    ns_delete.set_defaults(func=operations.cmd_namespace_delete)
    db = command("db", "the store")
    db.add_argument("db_command", choices=["upgrade", "rehash-niks"],
                    help="upgrade: apply missing migrations; rehash-niks: rebuild the NIK search index "
                         "with the current SATUPINTU_NIK_HASH_KEY")
    db.set_defaults(func=operations.cmd_db)
