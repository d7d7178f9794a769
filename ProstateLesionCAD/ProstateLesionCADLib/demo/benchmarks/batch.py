"""Bench: `detect` over a cohort (`batch.detect_cases`) — 20 demo phantoms as case folders through
the demo detector in one process; resident memory after each case, to show it stays flat
(the detector is loaded once and nothing of a finished case is kept)."""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

from ._measure import measure, table

TITLE = "Batch detection (memory over a cohort)"


def _resident_mb() -> float:
    """Current resident set size (Linux /proc; the peak where it is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cohort(n_cases: int, work: str) -> list[dict]:
    from ...batch import detect_cases, discover_cases
    from ...models.package import find_model
    from ...phantoms.generate import write_phantom
    from ..detector_model import DEMO_NAME, demo_phantom

    studies = Path(work) / "studies"
    for i in range(n_cases):
        write_phantom(demo_phantom(7700 + i, case_id=f"Cohort-{i + 1:02d}", ggg=[3]), studies / f"Cohort-{i + 1:02d}")
    rows: list[dict] = []
    last = [time.perf_counter()]

    def ended(outcome) -> None:
        now = time.perf_counter()
        rows.append({"case": len(rows) + 1, "status": outcome.status, "detections": outcome.detections,
                     "seconds": now - last[0], "rss_mb": _resident_mb(),
                     "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0})
        last[0] = now

    # the phantoms' own zones, ADC/DWI as generated: no segmentation, no registration
    detect_cases(discover_cases([studies]), find_model(DEMO_NAME, task="detector"), Path(work) / "out",
                 register_preset=None, device="cpu", on_case=ended)
    return rows


def run(out_dir, progress) -> str:
    n_cases = int(os.environ.get("PROSTATE_CAD_BENCH_BATCH_CASES", "20"))
    progress(0.0, f"batch: {n_cases} phantom cases in one process")
    with tempfile.TemporaryDirectory() as tmp:
        m = measure(_cohort, n_cases, tmp)
    progress(1.0, "batch measured")
    if m["error"]:
        return f"error: {m['error']}\n"
    rows = m["result"]
    shown = [{"case": r["case"], "status": r["status"], "detections": r["detections"],
              "seconds": f"{r['seconds']:.1f}", "resident MB": f"{r['rss_mb']:.0f}", "peak MB so far": f"{r['peak_mb']:.0f}"}
             for r in rows]
    second = rows[1] if len(rows) > 1 else rows[0]
    note = (f"{len(rows)} cases in {m['seconds']:.0f} s (with writing the phantoms). Peak resident memory after "
            f"case 2: {second['peak_mb']:.0f} MB, after case {len(rows)}: {rows[-1]['peak_mb']:.0f} MB "
            f"(growth {rows[-1]['peak_mb'] - second['peak_mb']:+.0f} MB over {len(rows) - 2} cases); "
            f"case 1 includes loading the detector.")
    return table(shown, ["case", "status", "detections", "seconds", "resident MB", "peak MB so far"]) + "\n" + note + "\n"
