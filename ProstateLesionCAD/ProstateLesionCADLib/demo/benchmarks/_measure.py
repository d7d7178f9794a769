"""Time and peak memory of one stage, measured in a fresh child process.

A child process gives an honest peak resident set size for that stage alone (the
parent's peak is monotonic and would mix stages). `func` must be importable at module
level (spawn start method) and return something picklable.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from typing import Any, Callable

from ...cancellation import start_quiet_resource_tracker, stopping_own_workers


def _child(conn, func, args, kwargs):
    start = time.perf_counter()
    try:
        with stopping_own_workers():  # a cancelled bench stops this stage's worker processes too
            result = func(*args, **kwargs)
        error = None
    except Exception as exc:  # reported in the bench table, not raised
        result, error = None, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB
    conn.send((result, seconds, peak_mb, error))
    conn.close()


def measure(func: Callable[..., Any], *args, **kwargs) -> dict[str, Any]:
    """Run func(*args, **kwargs) in a spawned child; return result, seconds, peak_mb, error."""
    ctx = mp.get_context("spawn")
    start_quiet_resource_tracker()  # the child's worker pools share it: no warnings after a cancel
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, func, args, kwargs))
    proc.start()
    child.close()
    start = time.perf_counter()
    try:
        result, seconds, peak_mb, error = parent.recv()
    except EOFError:  # the child died without a word (e.g. killed when memory ran out)
        proc.join()
        return {"result": None, "seconds": time.perf_counter() - start, "peak_mb": float("nan"),
                "error": f"the measuring process ended with exit code {proc.exitcode}"}
    proc.join()
    return {"result": result, "seconds": seconds, "peak_mb": peak_mb, "error": error}


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A small Markdown table from dict rows."""
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |\n" for r in rows)
    return head + body
