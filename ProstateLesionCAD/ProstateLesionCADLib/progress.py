"""Progress reporting for long work.

Machine-readable lines `PROGRESS <percent> <message>` go to stdout (the Slicer modules
parse them from the child process); when stderr is a terminal a human progress bar is
drawn there as well. Library functions take an optional `progress` callable
`(fraction_0_to_1, message)` so they stay independent of how progress is shown.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional

ProgressCallback = Callable[[float, str], None]


def silent(fraction: float, message: str) -> None:
    """A progress callback that shows nothing (library default)."""


class ConsoleProgress:
    """Prints PROGRESS lines to stdout and, on a terminal, a bar to stderr."""

    def __init__(self, stream=None, bar_stream=None):
        self.stream = stream or sys.stdout
        self.bar_stream = bar_stream if bar_stream is not None else sys.stderr
        self._last = None

    def __call__(self, fraction: float, message: str) -> None:
        pct = max(0.0, min(100.0, 100.0 * float(fraction)))
        key = (round(pct, 1), message)
        if key == self._last:
            return
        self._last = key
        self.stream.write(f"PROGRESS {pct:.1f} {message}\n")
        self.stream.flush()
        if hasattr(self.bar_stream, "isatty") and self.bar_stream.isatty():
            width = 30
            filled = int(round(width * pct / 100.0))
            self.bar_stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {pct:5.1f}% {message[:60]:<60}")
            if pct >= 100.0:
                self.bar_stream.write("\n")
            self.bar_stream.flush()


def sub_progress(progress: Optional[ProgressCallback], start: float, end: float) -> ProgressCallback:
    """Map a sub-task's 0..1 progress into the [start, end] slice of a parent's progress."""
    parent = progress or silent

    def report(fraction: float, message: str) -> None:
        parent(start + (end - start) * max(0.0, min(1.0, fraction)), message)

    return report


def parse_progress_line(line: str) -> Optional[tuple[float, str]]:
    """Parse a `PROGRESS <pct> <msg>` line into (percent, message); None for other lines."""
    if not line.startswith("PROGRESS "):
        return None
    parts = line.rstrip("\n").split(" ", 2)
    try:
        pct = float(parts[1])
    except (IndexError, ValueError):
        return None
    return pct, parts[2] if len(parts) > 2 else ""
