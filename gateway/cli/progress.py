"""A progress bar on stderr: redrawn in place (``\\r``) on a terminal, plain lines otherwise,
so that a log file or CI output gets one readable line per step instead of control frames."""

from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    """``done`` of ``total`` things, labelled; shown only for more than one thing."""

    WIDTH = 30

    def __init__(self, total: int, label: str, out: TextIO | None = None):
        self.total, self.label = total, label
        self.out = out or sys.stderr
        self.shown = -1

    def update(self, done: int) -> None:
        if self.total <= 1 or done == self.shown:
            return
        self.shown = done
        if not self.out.isatty():
            self.out.write(f"{done}/{self.total} {self.label}\n")
        else:
            filled = self.WIDTH * done // self.total
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.out.write(f"\r[{bar}] {done}/{self.total} {self.label}   " + ("\n" if done == self.total else ""))
        self.out.flush()
