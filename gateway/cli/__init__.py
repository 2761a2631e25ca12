"""The ``satupintu`` command (DESIGN §5).  Exit status: 0 success, 1 failed check, 2 usage error.

``arguments`` defines the command line; ``roles`` starts the long-running processes,
``run`` supervises them all in one tree, ``client`` talks to a gateway over HTTP (with
``progress`` on stderr), ``operations`` works on the store and the broker directly,
``config_check`` and ``calendar_check`` look at the catalog.  The environment is read
once, here, into one ``Settings`` object that every command receives.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from core.domain.errors import SatupintuError
from core.settings import Settings

from .arguments import parser
from .roles import cmd_sandbox

__all__ = ["main", "parser"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sandbox"]:
        # Everything after `sandbox` belongs to `python -m sandbox`, options included.
        return cmd_sandbox(argparse.Namespace(sandbox_args=argv[1:]), None)
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"satupintu: {exc}", file=sys.stderr)
        return 2
    try:
        status = args.func(args, settings)
        sys.stdout.flush()  # inside the try: a reader that went away fails this flush
        return status
    except SatupintuError as exc:
        print(f"satupintu: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `satupintu status ID | head`: the reader has all it wanted.  Point stdout at
        # /dev/null so that the interpreter's last flush cannot fail again at exit (the
        # recipe of Python's signal documentation), and end as a filter killed by SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
