"""Progress reporting for long work.

Everything about the work goes to stderr, so that stdout holds the results only (a table,
JSON, file names) and can be piped: machine-readable lines `PROGRESS <percent> <message>`
(the Slicer modules parse them from the child process), or a progress bar instead when
stderr is a terminal; `note: ...` lines (`note`) and, with -v, `detail: ...` lines
(`detail`). `set_verbosity` (the CLI's -q / -v) silences all of them or adds the details.
Library functions take an optional `progress` callable `(fraction_0_to_1, message)` so they
stay independent of how progress is shown.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional

ProgressCallback = Callable[[float, str], None]

QUIET, NORMAL, VERBOSE = -1, 0, 1
_verbosity = NORMAL


def set_verbosity(level: int) -> None:
    """QUIET: results and errors only; NORMAL: progress and notes too; VERBOSE: details too."""
    global _verbosity
    _verbosity = max(QUIET, min(VERBOSE, int(level)))


def verbosity() -> int:
    return _verbosity


def note(message: str) -> None:
    """A remark on the results the user should read (e.g. a channel left blank), on stderr."""
    if _verbosity >= NORMAL:
        print(f"note: {message}", file=sys.stderr, flush=True)


def detail(message: str) -> None:
    """More detail on how the work went (timings, files found), on stderr with -v only."""
    if _verbosity >= VERBOSE:
        print(f"detail: {message}", file=sys.stderr, flush=True)


def silent(fraction: float, message: str) -> None:
    """A progress callback that shows nothing (library default)."""


class ConsoleProgress:
    """PROGRESS lines on stderr, or a bar instead when stderr is a terminal (lines with -v); nothing with -q."""

    def __init__(self, stream=None, bar_stream=None):
        self._stream, self._bar_stream = stream, bar_stream  # default: sys.stderr when called (capture-friendly)
        self._last = None

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stderr

    @property
    def bar_stream(self):
        return self._bar_stream if self._bar_stream is not None else sys.stderr

    def __call__(self, fraction: float, message: str) -> None:
        if _verbosity <= QUIET:
            return
        pct = max(0.0, min(100.0, 100.0 * float(fraction)))
        key = (round(pct, 1), message)
        if key == self._last:
            return
        self._last = key
        bar = _verbosity < VERBOSE and hasattr(self.bar_stream, "isatty") and self.bar_stream.isatty()
        if not bar or self.stream is not self.bar_stream:
            self.stream.write(f"PROGRESS {pct:.1f} {message}\n")
            self.stream.flush()
        if bar:
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
