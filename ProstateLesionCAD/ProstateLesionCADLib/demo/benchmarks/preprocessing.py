"""Bench: loading the embedded sample and the paper's pre-processing (time, peak memory)."""

from __future__ import annotations

import time

from ._measure import measure, table

TITLE = "Case loading and pre-processing (embedded ProstateX-0000 sample)"


def _load_only(case_dir: str) -> dict:
    from ...study.loading import load_case

    case = load_case(case_dir)
    return {"roles": ", ".join(case.roles_present())}


def _load_and_preprocess(case_dir: str, normalise_over: str) -> dict:
    from ...study.loading import load_case
    from ...preprocessing.preprocess import preprocess

    start = time.perf_counter()
    case = load_case(case_dir)
    loaded = time.perf_counter()
    prep = preprocess(case, normalise_over=normalise_over)
    done = time.perf_counter()
    return {"load_s": loaded - start, "preprocess_s": done - loaded,
            "shape": "x".join(str(s) for s in prep.array.shape),
            "missing": ", ".join(prep.missing()) or "none"}


def run(out_dir, progress) -> str:
    from ...resources import sample_case_dir

    case_dir = str(sample_case_dir())
    rows = []
    progress(0.0, "bench: loading the sample")
    m = measure(_load_only, case_dir)
    rows.append({"stage": "load sample (NRRD per role)", "seconds": f"{m['seconds']:.2f}",
                 "peak MB": f"{m['peak_mb']:.0f}", "note": m["error"] or m["result"]["roles"]})
    for i, over in enumerate(("t2", "crop")):
        progress(0.3 + 0.35 * i, f"bench: load + pre-process (percentiles over {over})")
        m = measure(_load_and_preprocess, case_dir, over)
        r = m["result"] or {}
        note = m["error"] or (f"load {r['load_s']:.2f} s + pre-process {r['preprocess_s']:.2f} s; "
                              f"array {r['shape']} (C,Z,Y,X); zero channels: {r['missing']}")
        rows.append({"stage": f"load + pre-process, normalise over {over}", "seconds": f"{m['seconds']:.2f}",
                     "peak MB": f"{m['peak_mb']:.0f}", "note": note})
    progress(1.0, "bench: pre-processing done")
    return ("Each stage runs in a fresh process (peak resident memory of that process). "
            "Default pre-processing takes the 1st/99th percentiles over the whole T2-grid volume "
            "(as the authors' code), which costs one B-spline resampling of each non-T2 sequence "
            "onto the T2 grid; `--normalise-over crop` skips it.\n\n"
            + table(rows, ["stage", "seconds", "peak MB", "note"]))
