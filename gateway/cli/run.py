"""``satupintu run [--demo]``: every role in one supervised process tree (DESIGN §5).

The supervisor binds the gateway's address itself (``SATUPINTU_BIND``; port 0: one the
kernel picks) and hands the socket to the gateway child as ``fd://N``: a restarted gateway
serves on the same port, and connections wait in the backlog meanwhile.  With ``--demo``
the sandbox agencies start first on ports the kernel picks; the supervisor reads the ports
they report, points the catalog at them, and restarts a dead sandbox on the same ports.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from core.settings import Settings

from .startup import read_catalog, report_unknown_variables

SANDBOX_AGENCIES = ("company-registry", "municipality", "tax-office", "social-security")


def sandbox_variable(agency: str) -> str:
    """The variable the demo catalog reads ``agency``'s endpoint from."""
    return f"SATUPINTU_SANDBOX_{agency.upper().replace('-', '_')}_URL"


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from core.logs import configure
    from gateway.store import make_engine
    from gateway.store.migrations import upgrade
    from gateway.supervisor import Child, Supervisor, child_env, listen, role_argv
    configure("supervisor")
    report_unknown_variables(settings)
    # One machine, one command: bring the store up to date before anything uses it.
    engine = make_engine(settings.database_url)
    upgrade(engine)
    read_catalog(settings)  # fail here, with the file and field, rather than in every child
    listener = listen(settings.bind)
    host, port = listener.getsockname()[:2]
    gateway_url = f"http://{host}:{port}"
    supervisor = Supervisor([])
    folder = tempfile.mkdtemp(prefix="satupintu-run-")
    try:
        if args.demo:
            start_sandbox(supervisor, gateway_url, Path(folder) / "sandbox.json")
        env = child_env()
        gateway_env = dict(env, SATUPINTU_BIND=f"fd://{listener.fileno()}")
        supervisor.children += [Child("gateway", role_argv("serve"), gateway_env, pass_fds=(listener.fileno(),)),
                                Child("relay", role_argv("relay"), env), Child("tracker", role_argv("tracker"), env)]
        supervisor.children += [Child(f"worker-{i + 1}", role_argv("worker"), env) for i in range(args.workers)]
        supervisor.start()
        if args.demo and not demo_client(supervisor, engine, gateway_url):
            return 1
        supervisor.watch()
    finally:
        supervisor.stop()
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def start_sandbox(supervisor, gateway_url: str, report: Path) -> None:  # noqa: ANN001
    """Start the sandbox agencies, wait for the ports they report, and put their URLs (and
    the municipality's callback secret) in this process's environment for the children."""
    from core.domain.errors import SatupintuError
    from gateway.supervisor import Child, wait_file
    secret = secrets.token_hex(16)
    argv = [sys.executable, "-m", "sandbox", *(f"--{agency}-port=0" for agency in SANDBOX_AGENCIES),
            f"--report-file={report}", f"--callback-url={gateway_url}/v1/agencies/municipality/callbacks",
            f"--callback-secret={secret}"]
    child = Child("sandbox", argv, dict(os.environ), stdout=subprocess.DEVNULL)
    supervisor.children.append(child)
    supervisor.start()
    if not wait_file(str(report), 60, alive=lambda: child.process.poll() is None and not supervisor.stopping):
        raise SatupintuError("the sandbox agencies did not start (try `satupintu sandbox` to see why)")
    urls = json.loads(report.read_text(encoding="utf-8"))
    # Restarted, the sandbox binds the ports it reported (later options win in argparse).
    child.argv += [f"--{agency}-port={url.rsplit(':', 1)[1]}" for agency, url in urls.items()]
    os.environ.update({sandbox_variable(agency): url for agency, url in urls.items()})
    os.environ["SATUPINTU_MUNICIPALITY_SECRET"] = secret
    for agency, url in urls.items():
        print(f"sandbox {agency}: {url}  (stats: {url}/_sandbox/stats)", flush=True)


DEMO_CLIENT = "demo"


def demo_key(engine) -> str:  # noqa: ANN001
    """The demo client's key: one client named ``demo`` with every scope, given a new key on
    every run, so the previous run's key stops working (keys are stored hashed: an old one
    cannot be shown again).  Clients of earlier demos (``demo-XXXXXX``) are revoked."""
    from core.domain.errors import NotFound
    from gateway import clients
    with engine.begin() as conn:
        for old in clients.list_all(conn):
            if old["name"].startswith("demo-") and not old["revoked_at"]:
                clients.revoke(conn, old["name"])
        try:
            return clients.rotate(conn, DEMO_CLIENT)
        except NotFound:
            return clients.create(conn, DEMO_CLIENT, list(clients.SCOPES))[1]


def command_name(argv0: str) -> str:
    """How the user can run this command again from here: ``satupintu`` when that is what
    PATH finds, else the path that started this process (``.venv/bin/satupintu``)."""
    if argv0.endswith("__main__.py"):
        return f"{sys.executable} -m gateway.cli"
    found = shutil.which("satupintu")
    if found and os.path.realpath(found) == os.path.realpath(argv0):
        return "satupintu"
    return argv0


def demo_client(supervisor, engine, gateway_url: str) -> bool:  # noqa: ANN001
    """Once the gateway answers: the demo client's key, printed on a line of its own."""
    from gateway.supervisor import wait_http
    if not wait_http(f"{gateway_url}/healthz", 60, alive=lambda: not supervisor.stopping):
        print("the gateway did not come up within 60 s", file=sys.stderr)
        return False
    key = demo_key(engine)
    print(f"Satu Pintu demo at {gateway_url}  (dashboard: {gateway_url}/ops/)", flush=True)
    print(f"SATUPINTU_URL={gateway_url}", flush=True)
    print(f"SATUPINTU_API_KEY={key}", flush=True)
    print(f"Try:  SATUPINTU_URL={gateway_url} SATUPINTU_API_KEY={key} "
          f"{command_name(sys.argv[0])} submit examples/business-startup.json --wait", flush=True)
    return True
