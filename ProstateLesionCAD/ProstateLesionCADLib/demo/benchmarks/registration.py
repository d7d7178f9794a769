"""Registration bench: on ProstateX-0000 and ProstateX-0218, the T2/ADC gradient
correlation in the central prostate region before vs after, the selection score vs the
identity, a checkerboard PNG, and time per start and in total.

The "fast" preset runs by default; set PROSTATE_CAD_BENCH_REGISTRATION_PRESET=paper to run
the paper's 50 starts (measured: 33.6 CPU-minutes for the sample, 40 CPU-s per start).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

TITLE = "Registration (ADC/DWI → T2, multi-start BSpline)"
STUDIES = ("ProstateX-0000", "ProstateX-0218")


def _study_dir(name: str) -> Path:
    from ...resources import sample_case_dir

    shared = Path(os.environ.get("PROSTATE_CAD_SHARED", Path(__file__).resolve().parents[3].parent / "shared"))
    candidates = [shared / "data" / "prostatex" / name]
    if name == "ProstateX-0000":
        candidates.append(sample_case_dir())
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(f"study {name} not found (looked in {', '.join(map(str, candidates))})")


def _register_study(path: str, preset: str, png: str) -> dict:
    """Runs in a child process (measured): load, register, write the checkerboard."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...study.loading import load_case
    from ...registration.register import checkerboard, identity_transform, register_case

    case = load_case(path)
    began = time.perf_counter()
    result = register_case(case, preset=preset)
    seconds = time.perf_counter() - began
    fig, ax = plt.subplots(1, 2, figsize=(9, 4.5))
    for a, (title, tx) in zip(ax, (("before", identity_transform()), ("after", result.transform))):
        a.imshow(checkerboard(case.t2, case.adc, tx), cmap="gray")
        a.set_title(f"{case.case_id}: T2 / ADC {title}")
        a.axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)
    cc_name = next(iter(result.identity_score.correlations))
    return {"case": case.case_id, "regions": result.regions, "starts": len(result.starts),
            "workers": int(result.timings["workers"]),
            "cc_before": result.identity_score.correlations[cc_name],
            "cc_after": result.chosen_score.correlations[cc_name],
            "score_identity": result.identity_score.total, "score_chosen": result.chosen_score.total,
            "identity_kept": result.identity_kept,
            "cpu_per_start": result.timings["cpu_per_start_mean"], "cpu_starts": result.timings["starts_cpu"],
            "wall_total": seconds}


def run(out_dir, progress) -> str:
    from ._measure import measure, table

    preset = os.environ.get("PROSTATE_CAD_BENCH_REGISTRATION_PRESET", "fast")
    out_dir = Path(out_dir)
    rows = []
    for i, name in enumerate(STUDIES):
        progress(i / len(STUDIES), f"registration bench: {name} ({preset})")
        png = out_dir / f"checkerboard-{name}.png"
        m = measure(_register_study, str(_study_dir(name)), preset, str(png))
        if m["error"]:
            rows.append({"study": name, "note": m["error"]})
            continue
        r = m["result"]
        rows.append({"study": name, "region": r["regions"], "starts × workers": f"{r['starts']} × {r['workers']}",
                     "grad. CC before": f"{r['cc_before']:.3f}", "grad. CC after": f"{r['cc_after']:.3f}",
                     "score identity → chosen": f"{r['score_identity']:.4f} → {r['score_chosen']:.4f}",
                     "identity kept": "yes" if r["identity_kept"] else "no",
                     "CPU s / start": f"{r['cpu_per_start']:.1f}", "CPU s all starts": f"{r['cpu_starts']:.0f}",
                     "wall s total": f"{r['wall_total']:.0f}", "peak MB (parent)": f"{m['peak_mb']:.0f}",
                     "checkerboard": png.name})
    progress(1.0, "registration bench done")
    columns = ["study", "region", "starts × workers", "grad. CC before", "grad. CC after", "score identity → chosen",
               "identity kept", "CPU s / start", "CPU s all starts", "wall s total", "peak MB (parent)", "checkerboard"]
    return (f"Preset `{preset}` (set PROSTATE_CAD_BENCH_REGISTRATION_PRESET=paper for the paper's 50 starts). "
            "Gradient CC = correlation of the T2 and ADC gradient magnitudes in the central prostate region "
            "(no zonal mask given). Starts run single-threaded in parallel processes; peak memory is the parent's "
            "(each worker holds the cropped working images only).\n\n" + table(rows, columns))
