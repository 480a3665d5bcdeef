"""Progress output that reads well in a terminal and in a CI log.

In a terminal, long work redraws one line; in CI (``CI`` set, or stdout not a
TTY) every update is a plain line, and on GitHub Actions each step is folded
into a ``::group::``. Progress goes to stderr so stdout stays machine-readable.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO


class Reporter:
    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.interactive = self.stream.isatty() and not os.environ.get("CI")
        self.github = os.environ.get("GITHUB_ACTIONS") == "true"
        self._last_progress = 0.0
        self._open_line = False

    def _write(self, text: str) -> None:
        if self.quiet:
            return
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def info(self, message: str) -> None:
        self._write(message)

    def warn(self, message: str) -> None:
        self._write(f"warning: {message}")

    def step_start(self, index: int, total: int, name: str, detail: str = "") -> None:
        if self.github:
            self._write(f"::group::{name}")
        self._write(f"[{index}/{total}] {name}{' - ' + detail if detail else ''} ...")

    def step_end(self, index: int, total: int, name: str, status: str, seconds: float,
                 summary: str = "") -> None:
        if self.github:
            self._write("::endgroup::")
        tail = f": {summary}" if summary else ""
        self._write(f"[{index}/{total}] {name} {status} ({seconds:.1f}s){tail}")

    def progress(self, label: str, done: int, total: int, extra: str = "") -> None:
        """A progress bar in a terminal; at most one plain line per update in CI."""
        if self.quiet:
            return
        if self.interactive:
            width = 24
            filled = int(width * done / max(total, 1))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r  {label} [{bar}] {done}/{total} {extra}".ljust(79))
            self.stream.flush()
            self._open_line = done < total
            if done >= total:
                self.stream.write("\n")
        else:
            now = time.monotonic()
            # Every update in CI is a line, but never more than ~2 lines/second of noise.
            if done >= total or now - self._last_progress >= 0.5 or done <= 1:
                self._last_progress = now
                self._write(f"  {label} {done}/{total} {extra}".rstrip())


NULL_REPORTER = Reporter(quiet=True)
