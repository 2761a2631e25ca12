"""The operator commands: they work on the store, the broker and the catalog directly
(``dead-letters``, ``clients``, ``audit``, ``config check``, ``namespace delete``, ``db``)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
from typing import Any

from core.settings import Settings

from .startup import open_store, read_catalog


def cmd_namespace_delete(args: argparse.Namespace, settings: Settings) -> int:
    """Delete a namespace's queues and exchanges from RabbitMQ: a test run or a deployment
    that is gone for good.  Refuses while its queues hold messages, unless ``--force``."""
    import pika.exceptions

    from broker.connection import connect
    from broker.topology import Names, delete_for, namespace_queues
    catalog = read_catalog(settings)
    names = Names(args.namespace)
    connection = connect(settings.amqp_urls, name="satupintu-namespace")
    try:
        waiting = {}
        for queue in namespace_queues(names, catalog.agencies.values()):
            channel = connection.channel()  # a missing queue closes the channel it was asked on
            try:
                waiting[queue] = channel.queue_declare(queue, passive=True).method.message_count
                channel.close()
            except pika.exceptions.ChannelClosedByBroker:
                pass
        if not waiting:
            print(f"namespace {args.namespace!r}: no queues on the broker (for the catalog in {settings.config_dir})")
        full = {q: n for q, n in waiting.items() if n}
        for queue, count in waiting.items():
            print(f"{queue}: {count} message(s)")
        if full and not args.force:
            print(f"not deleted: {sum(full.values())} message(s) still queued; --force deletes them too",
                  file=sys.stderr)
            return 1
        delete_for(connection.channel(), names, catalog.agencies.values())
        print(f"namespace {args.namespace!r} deleted: {len(waiting)} queue(s) and its exchanges")
    finally:
        connection.close()
    return 0


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    if args.db_command == "rehash-niks":
        return cmd_db_rehash_niks(args, settings)
    return cmd_db_upgrade(args, settings)


def cmd_db_upgrade(_args: argparse.Namespace, settings: Settings) -> int:
    from gateway.store.migrations import LATEST, upgrade
    applied = upgrade(open_store(settings, migrated=False))
    print(f"applied migrations {', '.join(map(str, applied))}" if applied else f"already at version {LATEST}")
    return 0


def cmd_db_rehash_niks(_args: argparse.Namespace, settings: Settings) -> int:
    """Rebuild ``application_niks`` with the current ``SATUPINTU_NIK_HASH_KEY``, in batches:
    after the key changed, and after a rolling upgrade (see docs/operations.md)."""
    from core.masking import nik_hashes
    from gateway.store import nik_index
    store = open_store(settings)
    done = nik_index.rebuild(store, lambda data: nik_hashes(data, settings.nik_hash_key),
                             progress=lambda n: _progress_count(n, "applications rehashed"))
    if done and sys.stderr.isatty():
        sys.stderr.write("\n")
    print(f"rehashed the NIKs of {done} application(s)")
    return 0


def _progress_count(done: int, label: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{done} {label}   ")
        sys.stderr.flush()


# On stderr, so that stdout is the key alone (DESIGN §5) and `KEY=$(satupintu clients create ...)` works.
KEY_SHOWN_ONCE = "the key is shown only this once (the store keeps a hash of it): keep it now"


def cmd_clients(args: argparse.Namespace, settings: Settings) -> int:
    from gateway import clients
    store = open_store(settings)
    with store.begin() as conn:
        if args.clients_command == "create":
            try:
                _client, key = clients.create(conn, args.name, args.scope, args.webhook_url)
            except ValueError as exc:
                print(f"satupintu: {exc}", file=sys.stderr)
                return 2
            print(key)
            print(KEY_SHOWN_ONCE, file=sys.stderr)
            if args.webhook_url:
                secret = clients.webhook_secret_of(conn, args.name, settings.webhook_key)
                print(f"webhook secret (shown only this once; `clients webhook-secret {args.name}` makes a new one): "
                      f"{secret}", file=sys.stderr)
        elif args.clients_command == "webhook-secret":
            print(clients.rotate_webhook_secret(conn, args.name, settings.webhook_key))
            print("The webhook secret is shown only this once; webhooks are signed with it from now on.",
                  file=sys.stderr)
        elif args.clients_command == "list":
            for c in clients.list_all(conn):
                print(f"{c['name']:<24} {' '.join(c['scopes']):<18} {'revoked' if c['revoked_at'] else 'active'}")
        elif args.clients_command == "revoke":
            clients.revoke(conn, args.name)
        elif args.clients_command == "rotate":
            print(clients.rotate(conn, args.name))
            print(KEY_SHOWN_ONCE, file=sys.stderr)
    return 0


def cmd_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    if args.dl_command == "replay" and not (args.id or args.agency or args.all):
        print("say which: an ID, --agency A, or --all", file=sys.stderr)
        return 2
    from gateway import dead_letters
    store = open_store(settings)
    if args.dl_command == "list":
        rows = dead_letters.list_open(store, agency=args.agency)
        if args.json:
            print(json.dumps({"items": rows}, indent=2))
        elif rows:
            print(dead_letter_table(rows, shutil.get_terminal_size().columns))
        else:
            print("no dead letters")
        return 0
    replayed = dead_letters.replay(store, read_catalog(settings), ids=[args.id] if args.id else None,
                                   agency=args.agency, cause="satupintu dead-letters replay")
    print(f"replayed {len(replayed)} dead letter(s)")
    return 0


def dead_letter_table(rows: list[dict[str, Any]], width: int) -> str:
    """The dead letters as a table ``width`` columns wide: the reason gets what the other
    columns leave (at least 10), cut with "..."; ``--json`` has it whole."""
    columns = ("id", "created_at", "agency", "application_id", "step", "attempts")
    shown = [dict(row, created_at=(row["created_at"] or "")[:19].replace("T", " ")) for row in rows]  # to the second
    cells = [[str(row[c] if row[c] is not None else "-") for c in columns] for row in shown]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    room = max(10, width - sum(widths) - 2 * len(widths))
    header = "  ".join(c.ljust(w) for c, w in zip(columns, widths)) + "  reason"
    lines = [header]
    for row, line in zip(rows, cells):
        reason = " ".join(str(row["reason"] or "").split())
        if len(reason) > room:
            reason = reason[:room - 3] + "..."
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + reason)
    return "\n".join(lines)


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.audit import ANCHOR_SETTLE, verify
    try:
        report = verify(open_store(settings), anchor=args.anchor)
    except ValueError as exc:
        print(f"satupintu: {exc}", file=sys.stderr)
        return 2
    if report.broken:
        where = f" of application {report.broken['application_id']}" if report.broken["application_id"] else ""
        print(f"audit chain broken at event row {report.broken['id']}{where}: {report.broken['problem']}",
              file=sys.stderr)
        return 1
    print(f"audit chain intact: {report.events} event(s) of {report.applications} application(s)")
    if report.anchor:
        print(f"anchor {report.anchor}  (keep it outside the database; check later with --anchor)")
    if report.left_out:
        # PostgreSQL only: a transaction that took a lower id may still be committing (gateway/audit.py).
        ready = report.settled_at  # SQLite hands back naive datetimes, which are UTC by construction
        when = (ready if ready.tzinfo else ready.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).strftime("%H:%M:%S UTC")
        print(f"{'no anchor yet: the' if not report.anchor else 'not in the anchor: the newest'} "
              f"{report.left_out} event row(s) are younger than {int(ANCHOR_SETTLE.total_seconds())} s "
              f"(a transaction that took a lower id may still be committing); run again after {when} "
              "to anchor them")
    return 0
