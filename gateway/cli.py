"""The ``satupintu`` command (DESIGN §5).  Exit status: 0 success, 1 failed check, 2 usage error."""

from __future__ import annotations

import argparse
import gc
import json
import os
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from core.domain.errors import SatupintuError
from core.settings import Settings

SANDBOX_AGENCIES = ("company-registry", "municipality", "tax-office", "social-security")


def _settings() -> Settings:
    return Settings.from_env()


def _engine(settings: Settings, *, migrated: bool = True):
    from .store import make_engine
    from .store.migrations import require_current
    engine = make_engine(settings.database_url)
    if migrated:
        require_current(engine)
    return engine


def _catalog(settings: Settings):
    from .catalog import load_catalog
    return load_catalog(settings.config_dir)


def _run_until_signal(component: Any) -> int:
    """Run ``component.run()`` in the main thread; SIGTERM/SIGINT call ``component.stop()``."""
    def on_signal(_signum: int, _frame: Any) -> None:
        component.stop()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # What the role built to start (catalog, adapters and their WSGI/zeep clients, the
    # engine) lives as long as the process: full collections need not walk it (decision 35).
    gc.freeze()
    component.run()
    return 0


# --- roles ----------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    import atexit
    import shutil
    import tempfile

    from gunicorn.app.base import BaseApplication

    # Before prometheus-client is imported: the gunicorn workers' counters add up through
    # files in this folder (multiprocess mode); a folder we made goes when the master exits.
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        folder, master = tempfile.mkdtemp(prefix="satupintu-metrics-"), os.getpid()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        atexit.register(lambda: os.getpid() == master and shutil.rmtree(folder, ignore_errors=True))
    from core.logs import configure

    from .api import create_app
    from .serving import worker_class
    configure("gateway")
    settings = _settings()
    flask_app = create_app(settings)

    class Gunicorn(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", settings.bind)
            # gthread (whose threads keep a busy connection, gateway/serving.py): threads serve
            # slow clients and SSE streams without blocking a process.
            self.cfg.set("worker_class", worker_class())
            self.cfg.set("workers", int(os.environ.get("SATUPINTU_WEB_WORKERS", args.workers)))
            self.cfg.set("threads", int(os.environ.get("SATUPINTU_WEB_THREADS", 8)))
            self.cfg.set("timeout", 60)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("accesslog", None)
            self.cfg.set("keepalive", 55)  # as gunicorn.conf.py: outlive a balancer's idle timeout
            if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 25.1; see gunicorn.conf.py
                self.cfg.set("control_socket_disable", True)
            if os.path.isdir("/dev/shm"):
                # gunicorn's heartbeat touches this file on every request: keep it in memory.
                self.cfg.set("worker_tmp_dir", "/dev/shm")

        def load(self):
            return flask_app

    Gunicorn().run()
    return 0


def cmd_relay(_args: argparse.Namespace) -> int:
    from core.logs import configure

    from .relay import Relay
    configure("relay")
    from core.metrics import expose
    expose("relay")  # this process's /metrics on SATUPINTU_METRICS_PORT, when set
    settings = _settings()
    relay = Relay(_engine(settings), _catalog(settings), amqp_urls=settings.amqp_urls, namespace=settings.namespace)
    return _run_until_signal(relay)


def cmd_worker(args: argparse.Namespace) -> int:
    from broker.worker import Worker
    from core.logs import configure
    configure("worker")
    from core.metrics import expose
    expose("worker")  # this process's /metrics on SATUPINTU_METRICS_PORT, when set
    settings = _settings()
    catalog = _catalog(settings)
    unknown = [a for a in args.agency or [] if a not in catalog.agencies]
    if unknown:
        print(f"unknown agency {unknown[0]!r}; known: {', '.join(sorted(catalog.agencies))}", file=sys.stderr)
        return 2
    worker = Worker(catalog, settings, agencies=args.agency)
    worker.start()
    return _run_until_signal(worker)


def cmd_tracker(_args: argparse.Namespace) -> int:
    from core.logs import configure

    from .notifier import Notifier
    from .tracker import Tracker
    configure("tracker")
    from core.metrics import expose
    expose("tracker")  # this process's /metrics on SATUPINTU_METRICS_PORT, when set
    settings = _settings()
    engine = _engine(settings)
    tracker = Tracker(engine, _catalog(settings), amqp_urls=settings.amqp_urls, namespace=settings.namespace)
    # Webhook deliveries run beside the tracker: same store, no broker.
    notifier = Notifier(engine)
    thread = threading.Thread(target=notifier.run, name="notifier", daemon=True)
    thread.start()
    try:
        return _run_until_signal(tracker)
    finally:
        notifier.stop()
        thread.join(15)


def cmd_sandbox(args: argparse.Namespace) -> int:
    argv = [sys.executable, "-m", "sandbox", *args.sandbox_args]
    os.execv(argv[0], argv)
    return 0  # not reached


# --- run: the whole system in one process tree -------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from core.logs import configure

    from . import clients
    from .store import make_engine
    from .store.migrations import upgrade
    from .supervisor import Child, Supervisor, child_env, free_port, role_argv, wait_http
    configure("supervisor")
    settings = _settings()
    extra: dict[str, str] = {}
    host = settings.bind.rsplit(":", 1)[0] or "127.0.0.1"
    gateway_url = f"http://{host}:{settings.bind.rsplit(':', 1)[1]}"
    sandbox_child = None
    if args.demo:
        ports = {agency: free_port() for agency in SANDBOX_AGENCIES}
        secret = secrets.token_hex(16)
        for agency, port in ports.items():
            extra[f"SATUPINTU_SANDBOX_{agency.upper().replace('-', '_')}_URL"] = f"http://127.0.0.1:{port}"
        extra.update(SATUPINTU_MUNICIPALITY_SECRET=secret, SANDBOX_MUNICIPALITY_SECRET=secret,
                     SANDBOX_MUNICIPALITY_CALLBACK_URL=f"{gateway_url}/v1/agencies/municipality/callbacks")
        os.environ.update(extra)
        sandbox_args = [f"--{agency}-port={port}" for agency, port in ports.items()]
        sandbox_child = Child("sandbox", [sys.executable, "-m", "sandbox", *sandbox_args], child_env(),
                              stdout=subprocess_devnull())
    # One machine, one command: bring the store up to date before anything uses it.
    engine = make_engine(settings.database_url)
    upgrade(engine)
    _catalog(settings)  # fail here, with the file and field, rather than in every child
    env = child_env()
    children = [Child("gateway", role_argv("serve"), env), Child("relay", role_argv("relay"), env),
                Child("tracker", role_argv("tracker"), env)]
    children += [Child(f"worker-{i + 1}", role_argv("worker"), env) for i in range(args.workers)]
    if sandbox_child:
        children.insert(0, sandbox_child)
    supervisor = Supervisor(children)
    supervisor.start()
    try:
        if args.demo:
            gateway = children[1]
            if not wait_http(f"{gateway_url}/healthz", 60, alive=lambda: not supervisor.stopping):
                print("the gateway did not come up within 60 s", file=sys.stderr)
                return 1
            for agency in SANDBOX_AGENCIES:
                wait_http(extra[f"SATUPINTU_SANDBOX_{agency.upper().replace('-', '_')}_URL"] + "/_sandbox/stats", 30)
            with engine.begin() as conn:
                name = f"demo-{secrets.token_hex(3)}"
                _client, key = clients.create(conn, name, list(clients.SCOPES))
            del gateway
            print(f"Satu Pintu demo at {gateway_url}  (dashboard: {gateway_url}/ops/)", flush=True)
            print(f"SATUPINTU_API_KEY={key}", flush=True)
            print(f"Try:  SATUPINTU_API_KEY={key} SATUPINTU_BIND={settings.bind} "
                  f"satupintu submit examples/business-startup.json --wait", flush=True)
        supervisor.watch()
    finally:
        supervisor.stop()
    return 0


def subprocess_devnull() -> int:
    import subprocess
    return subprocess.DEVNULL


# --- client commands (talk to the gateway over HTTP) ----------------------------------------

def _api(method: str, path: str, *, body: Any = None, key: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    settings = _settings()
    base = os.environ.get("SATUPINTU_URL") or f"http://{settings.bind}"
    key = key or os.environ.get("SATUPINTU_API_KEY")
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


def cmd_submit(args: argparse.Namespace) -> int:
    import uuid
    ids = []
    for i, path in enumerate(args.files):
        try:
            body = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"{path}: cannot read a JSON body: {exc}", file=sys.stderr)
            return 2
        status, doc = _api("POST", "/v1/applications", body=body, headers={"Idempotency-Key": uuid.uuid4().hex})
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
            status, doc = _api("GET", f"/v1/applications/{app_id}")
            if status == 200 and doc["status"] != "in_progress":
                final[app_id] = doc["status"]
        _progress(len(final), len(ids), "decided")
        if len(final) < len(ids):
            time.sleep(0.5)
    for app_id in ids:
        print(f"{app_id} {final.get(app_id, 'in_progress (timed out waiting)')}")
    return 0 if all(final.get(a) == "completed" for a in ids) else 1


def cmd_status(args: argparse.Namespace) -> int:
    status, doc = _api("GET", f"/v1/applications/{args.id}")
    if status != 200:
        print(f"{status} {doc.get('detail') if isinstance(doc, dict) else doc}", file=sys.stderr)
        return 1
    print(f"{doc['id']}  {doc['service']}  {doc['status']}  (created {doc['created_at']})")
    for r in doc["requests"]:
        print(f"  {r['step']:<20} {r['agency']:<18} {r['status']:<10} attempts={r['attempts']} "
              f"ref={r['agency_reference'] or '-'} {r['reason'] or ''}")
    status, hist = _api("GET", f"/v1/applications/{args.id}/history")
    if status == 200:
        print("timeline:")
        for e in hist["events"]:
            print(f"  {e['occurred_at']}  {e['type']:<12} {e['step'] or '':<16} {e['status'] or '':<10} "
                  f"{e['cause'] or ''}")
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    """A live per-agency table from ``/ops/api/agencies`` (needs an ``ops`` key)."""
    from .ops.top import render
    while True:
        status, doc = _api("GET", "/ops/api/agencies")
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


# --- operator commands (talk to the store) ----------------------------------------------

def cmd_namespace_delete(args: argparse.Namespace) -> int:
    """Delete a namespace's queues and exchanges from RabbitMQ: a test run or a deployment
    that is gone for good.  Refuses while its queues hold messages, unless ``--force``."""
    import pika.exceptions

    from broker.connection import connect
    from broker.topology import Names, delete_for, namespace_queues
    settings = _settings()
    catalog = _catalog(settings)
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


def cmd_db(args: argparse.Namespace) -> int:
    if args.db_command == "rehash-niks":
        return cmd_db_rehash_niks(args)
    return cmd_db_upgrade(args)


def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    from .store.migrations import LATEST, upgrade
    applied = upgrade(_engine(_settings(), migrated=False))
    print(f"applied migrations {', '.join(map(str, applied))}" if applied else f"already at version {LATEST}")
    return 0


def cmd_db_rehash_niks(_args: argparse.Namespace) -> int:
    """Rebuild ``application_niks`` with the current ``SATUPINTU_NIK_HASH_KEY``, in batches:
    after the key changed, and after a rolling upgrade (see docs/operations.md)."""
    from core.masking import nik_hashes

    from .store import nik_index
    settings = _settings()
    engine = _engine(settings)
    done = nik_index.rebuild(engine, lambda data: nik_hashes(data, settings.nik_hash_key),
                             progress=lambda n: _progress_count(n, "applications rehashed"))
    if done and sys.stderr.isatty():
        sys.stderr.write("\n")
    print(f"rehashed the NIKs of {done} application(s)")
    return 0


def _progress_count(done: int, label: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{done} {label}   ")
        sys.stderr.flush()


def cmd_config_check(_args: argparse.Namespace) -> int:
    from adapters.registry import adapter_class
    settings = _settings()
    try:
        catalog = _catalog(settings)
    except SatupintuError as exc:
        print(exc, file=sys.stderr)
        return 1
    problems = 0
    for agency in catalog.agencies.values():
        adapter = adapter_class(agency.adapter)(agency)
        try:
            found = adapter.check()
        finally:
            adapter.close()
        for problem in found:
            print(f"{agency.file}: {problem}", file=sys.stderr)
        problems += len(found)
        print(f"agency {agency.id}: {agency.adapter}, {len(agency.operations)} operation(s), "
              f"{'ok' if not found else f'{len(found)} problem(s)'}")
    from .schema_limits import unbounded_fields
    for service in catalog.services.values():
        print(f"service {service.id}: {len(service.steps)} step(s) in order {' -> '.join(service.order)}")
        for warning in unbounded_fields(service.input_schema):  # a warning: the exit status stays 0
            print(f"warning: {service.file}: input_schema {warning}", file=sys.stderr)
    return 1 if problems else 0


def cmd_clients(args: argparse.Namespace) -> int:
    from . import clients
    engine = _engine(_settings())
    with engine.begin() as conn:
        if args.clients_command == "create":
            try:
                _client, key = clients.create(conn, args.name, args.scope, args.webhook_url)
            except ValueError as exc:
                print(f"satupintu: {exc}", file=sys.stderr)
                return 2
            print(key)
        elif args.clients_command == "list":
            for c in clients.list_all(conn):
                print(f"{c['name']:<24} {' '.join(c['scopes']):<18} {'revoked' if c['revoked_at'] else 'active'}")
        elif args.clients_command == "revoke":
            clients.revoke(conn, args.name)
        elif args.clients_command == "rotate":
            print(clients.rotate(conn, args.name))
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from . import dead_letters
    if args.dl_command == "replay" and not (args.id or args.agency or args.all):
        print("say which: an ID, --agency A, or --all", file=sys.stderr)
        return 2
    settings = _settings()
    engine = _engine(settings)
    if args.dl_command == "list":
        rows = dead_letters.list_open(engine, agency=args.agency)
        for d in rows:
            print(f"{d['id']:>6}  {d['created_at']}  {d['agency']:<18} {d['request_id']}  attempts={d['attempts']}  "
                  f"{d['reason'][:100]}")
        if not rows:
            print("no dead letters")
        return 0
    replayed = dead_letters.replay(engine, _catalog(settings), ids=[args.id] if args.id else None,
                                   agency=args.agency, cause="satupintu dead-letters replay")
    print(f"replayed {len(replayed)} dead letter(s)")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from .audit import verify
    try:
        report = verify(_engine(_settings()), anchor=args.anchor)
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
    return 0


# --- the parser -------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="satupintu", description="Satu Pintu: one door to many agencies.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="everything in one supervised process tree")
    run.add_argument("--demo", action="store_true", help="also the sandbox agencies and a demo client key")
    run.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    run.set_defaults(func=cmd_run)
    serve = sub.add_parser("serve", help="the HTTP gateway (gunicorn)")
    serve.add_argument("--workers", type=int, default=2)
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("relay", help="publish the outbox").set_defaults(func=cmd_relay)
    worker = sub.add_parser("worker", help="call agencies for queued requests")
    worker.add_argument("--agency", action="append", help="only this agency (repeatable)")
    worker.set_defaults(func=cmd_worker)
    sub.add_parser("tracker", help="apply status events").set_defaults(func=cmd_tracker)
    sandbox = sub.add_parser("sandbox", help="the sandbox agencies (arguments go to `python -m sandbox`)")
    sandbox.add_argument("sandbox_args", nargs=argparse.REMAINDER)
    sandbox.set_defaults(func=cmd_sandbox)
    submit = sub.add_parser("submit", help="submit request bodies from files")
    submit.add_argument("files", nargs="+", metavar="FILE")
    submit.add_argument("--wait", action="store_true", help="wait until each is decided")
    submit.add_argument("--timeout", type=float, default=300)
    submit.set_defaults(func=cmd_submit)
    status = sub.add_parser("status", help="an application and its timeline")
    status.add_argument("id")
    status.set_defaults(func=cmd_status)
    top = sub.add_parser("top", help="a live per-agency table (needs an ops key)")
    top.add_argument("--once", action="store_true", help="print the table once and exit")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    top.set_defaults(func=cmd_top)
    dl = sub.add_parser("dead-letters", help="list or replay dead letters")
    dl_sub = dl.add_subparsers(dest="dl_command", required=True)
    dl_list = dl_sub.add_parser("list")
    dl_list.add_argument("--agency")
    dl_replay = dl_sub.add_parser("replay")
    dl_replay.add_argument("id", nargs="?", type=int)
    dl_replay.add_argument("--agency")
    dl_replay.add_argument("--all", action="store_true")
    dl.set_defaults(func=cmd_dead_letters)
    cl = sub.add_parser("clients", help="API clients (front offices)")
    cl_sub = cl.add_subparsers(dest="clients_command", required=True)
    create = cl_sub.add_parser("create")
    create.add_argument("name")
    create.add_argument("--scope", action="append", required=True, choices=["submit", "read", "ops"])
    create.add_argument("--webhook-url")
    cl_sub.add_parser("list")
    for name in ("revoke", "rotate"):
        cl_sub.add_parser(name).add_argument("name")
    cl.set_defaults(func=cmd_clients)
    audit = sub.add_parser("audit", help="the tamper-evident event log")
    audit.add_argument("audit_command", choices=["verify"])
    audit.add_argument("--anchor", metavar="ID:DIGEST", help="also check the chains against an anchor printed before")
    audit.set_defaults(func=cmd_audit_verify)
    config = sub.add_parser("config", help="the catalog")
    config.add_argument("config_command", choices=["check"])
    config.set_defaults(func=cmd_config_check)
    ns = sub.add_parser("namespace", help="a namespace's queues and exchanges on RabbitMQ")
    ns_sub = ns.add_subparsers(dest="namespace_command", required=True)
    ns_delete = ns_sub.add_parser("delete", help="delete them (refused while messages are queued)")
    ns_delete.add_argument("namespace")
    ns_delete.add_argument("--force", action="store_true", help="delete queued messages too")
    ns_delete.set_defaults(func=cmd_namespace_delete)
    db = sub.add_parser("db", help="the store")
    db.add_argument("db_command", choices=["upgrade", "rehash-niks"],
                    help="upgrade: apply missing migrations; rehash-niks: rebuild the NIK search index "
                         "with the current SATUPINTU_NIK_HASH_KEY")
    db.set_defaults(func=cmd_db)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sandbox"]:
        # Everything after `sandbox` belongs to `python -m sandbox`, options included.
        return cmd_sandbox(argparse.Namespace(sandbox_args=argv[1:]))
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except SatupintuError as exc:
        print(f"satupintu: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    threading.current_thread().name = "main"
    sys.exit(main())
