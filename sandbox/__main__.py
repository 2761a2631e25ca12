"""``python -m sandbox``: run the four sandbox agencies until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from .knobs import KnobError
from .server import AGENCY_IDS, DEFAULT_PORTS, Sandbox, SandboxSettings


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Pretend government agencies for Satu Pintu, over real HTTP.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    for agency_id in AGENCY_IDS:
        parser.add_argument(
            f"--{agency_id}-port",
            type=int,
            default=DEFAULT_PORTS[agency_id],
            help=f"port for {agency_id} (default {DEFAULT_PORTS[agency_id]}; 0 = a port the "
            "kernel picks, reported on stdout and in --report-file)",
        )
    parser.add_argument(
        "--report-file",
        help="once every agency serves, write their URLs there as JSON ({agency: url}): "
        "how a program that started the sandbox on port 0 learns the ports",
    )
    parser.add_argument(
        "--callback-url",
        default=os.environ.get("SANDBOX_MUNICIPALITY_CALLBACK_URL", ""),
        help="where the municipality POSTs its decisions (env SANDBOX_MUNICIPALITY_CALLBACK_URL)",
    )
    parser.add_argument(
        "--callback-secret",
        default=os.environ.get("SANDBOX_MUNICIPALITY_SECRET", ""),
        help="HMAC secret for signing callbacks (env SANDBOX_MUNICIPALITY_SECRET)",
    )
    parser.add_argument(
        "--decision-delay",
        type=float,
        default=float(os.environ.get("SANDBOX_DECISION_DELAY", "1.0")),
        help="seconds before municipality / social-security decide (env SANDBOX_DECISION_DELAY)",
    )
    parser.add_argument(
        "--faults",
        default="{}",
        help='initial knobs per agency as JSON, e.g. \'{"tax-office": {"latency_ms": 200}}\'',
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=SandboxSettings.threads,
        help="threads answering calls, per agency: the most calls one agency works on "
        f"at once (default {SandboxSettings.threads})",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> SandboxSettings:
    try:
        faults = json.loads(args.faults)
    except ValueError as exc:
        raise KnobError(f"--faults is not valid JSON: {exc}") from exc
    if not isinstance(faults, dict) or not all(
        isinstance(v, dict) for v in faults.values()
    ):
        raise KnobError(
            '--faults must be an object of objects: {"<agency-id>": {knob: value}}'
        )
    knobs = {
        agency_id: dict(faults.get(agency_id, {}))
        for agency_id in set(AGENCY_IDS) | set(faults)
    }
    # Command-line options are defaults; an explicit knob in --faults wins.
    knobs["municipality"] = {
        "decision_delay": args.decision_delay,
        "callback_url": args.callback_url,
        "callback_secret": args.callback_secret,
        **knobs["municipality"],
    }
    knobs["social-security"] = {
        "decision_delay": args.decision_delay,
        **knobs["social-security"],
    }
    ports = {
        agency_id: getattr(args, agency_id.replace("-", "_") + "_port")
        for agency_id in AGENCY_IDS
    }
    return SandboxSettings(
        host=args.host,
        ports=ports,
        knobs=knobs,
        verbose=args.verbose,
        threads=args.threads,
    )


def write_report(path: str, urls: dict[str, str]) -> None:
    """``urls`` as JSON at ``path``, whole or not at all (a reader polls for the file)."""
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "w", encoding="utf-8") as out:
        json.dump(urls, out)
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # spyne logs every Fault it sends, and faults are part of the act here.
        logging.getLogger("spyne").setLevel(logging.CRITICAL)
    # Installed before binding, so a signal during start-up still ends with exit code 0.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        sandbox = Sandbox(settings_from(args))
        urls = sandbox.start()
    except (KnobError, OSError) as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    for agency_id, url in urls.items():
        print(f"SANDBOX {agency_id} {url}", flush=True)
    if args.report_file:
        write_report(args.report_file, urls)
    print("SANDBOX READY", flush=True)
    while not stop.wait(0.2):
        pass
    sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
