"""Bench: `evaluate` (lesion matching, ROC, 1000 bootstrap resamples, FROC) on synthetic sets."""

from __future__ import annotations

from pathlib import Path

TITLE = "Evaluation (lesion/patient ROC, bootstrap CIs, FROC)"


def synthetic_sets(n_patients: int, seed: int = 0):
    """Ground truth with 0-3 lesions per patient and detections near them plus decoys."""
    import numpy as np

    from ...formats import Detection, DetectionCase, DetectionSet, GroundTruthCase, GroundTruthSet, Lesion

    rng = np.random.default_rng(seed)
    gt_cases, det_cases = [], []
    for p in range(n_patients):
        lesions, dets = [], []
        for i in range(int(rng.integers(0, 4))):
            ggg = int(rng.integers(0, 4))
            centre = tuple(rng.uniform(-20, 20, 3))
            lesions.append(Lesion(i + 1, ggg, centre))
            if rng.random() < 0.9:
                score = float(np.clip(0.1 + 0.2 * ggg + rng.normal(0, 0.15), 0.01, 0.99))
                dets.append(Detection(len(dets) + 1, max(0, min(3, ggg + int(rng.integers(-1, 2)))), score,
                                      tuple(np.asarray(centre) + rng.normal(0, 3, 3))))
        for _ in range(int(rng.integers(0, 4))):
            dets.append(Detection(len(dets) + 1, int(rng.integers(0, 4)), float(rng.uniform(0.01, 0.4)),
                                  tuple(rng.uniform(-30, 30, 3))))
        gt_cases.append(GroundTruthCase(f"P{p:04d}", lesions))
        det_cases.append(DetectionCase(f"P{p:04d}", dets))
    return DetectionSet(det_cases), GroundTruthSet(gt_cases)


def run_once(n_patients: int, bootstrap: int) -> str:
    from ...evaluation import evaluate

    dets, gt = synthetic_sets(n_patients)
    result = evaluate(dets, gt, bootstrap=bootstrap, with_froc=True)
    return f"{result['GGG>=2']['lesion']['auc']:.3f}"


def run(out_dir: Path, progress) -> str:
    from ._measure import measure, table

    rows = []
    cases = [(45, 1000), (200, 1000), (1000, 1000)]
    for i, (n, b) in enumerate(cases):
        progress(i / len(cases), f"evaluate {n} patients, {b} resamples")
        m = measure(run_once, n, b)
        rows.append({"patients": n, "bootstrap resamples": b, "seconds": f"{m['seconds']:.2f}",
                     "peak MB": f"{m['peak_mb']:.0f}", "GGG>=2 lesion AUC": m["result"] or m["error"]})
    progress(1.0, "evaluation bench done")
    return ("Synthetic detections (0-3 lesions per patient, 90% detected, decoys), all three criteria, "
            "lesion and patient level, FROC included.\n\n"
            + table(rows, ["patients", "bootstrap resamples", "seconds", "peak MB", "GGG>=2 lesion AUC"]))
