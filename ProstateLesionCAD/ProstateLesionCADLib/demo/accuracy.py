"""Lesion-level AUC of a detector on a large held-out phantom set (`make accuracy`).

The unit test's 40 held-out lesions (Testing/test_detector_heldout.py) keep CI short, but an AUC
on 20 positives has a standard error of about 0.04. This runs the same recipe on more phantoms
(default 96: every ordered pair of grades six times, 192 lesions, 96 of them GGG>=2, centres at
least 15 mm apart, seeds the demo training never used) and scores them as `prostate-cad
evaluate` does, with bootstrap confidence intervals. About 7 minutes for the demo model on 2
CPU cores. The command line is `commands/accuracy.py`.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

FIRST_SEED = 20000  # demo training uses seeds 100..1003, its calibration 60000..60149, the unit test 9001..9024


def heldout_grades(n_phantoms: int) -> list[list[int]]:
    """Two lesions per phantom, cycling through all 16 ordered pairs of GGG 0..3."""
    pairs = list(itertools.product(range(4), repeat=2))
    return [list(pairs[i % len(pairs)]) for i in range(n_phantoms)]


def heldout_phantoms(n_phantoms: int, first_seed: int = FIRST_SEED, progress=None) -> tuple[list, list[int]]:
    """The held-out phantoms of seeds first_seed .. first_seed + n_phantoms - 1 (grades from
    `heldout_grades`, lesion centres at least 15 mm apart) and the seeds left out because their
    lesions do not fit in the gland (as training leaves them out: `drawable_demo_phantom`)."""
    from ..progress import silent
    from .detector_model import drawable_demo_phantom

    progress = progress or silent
    phantoms, skipped = [], []
    for i, ggg in enumerate(heldout_grades(n_phantoms)):
        progress(i / n_phantoms, f"drawing held-out phantom {i + 1}/{n_phantoms}")
        seed = first_seed + i
        phantom = drawable_demo_phantom(seed, case_id=f"HeldOut-{seed}", ggg=ggg, min_lesion_distance_mm=15.0)
        if phantom is None:
            skipped.append(seed)
        else:
            phantoms.append(phantom)
    return phantoms, skipped


def measure(model: str, out: Path, n_phantoms: int = 96, bootstrap: int = 1000, progress=None,
            first_seed: int = FIRST_SEED) -> dict:
    """Detect on `n_phantoms` held-out phantoms with the detector package `model` (name or folder),
    write out/detections.json, out/ground-truth.json and out/evaluation/metrics.json; return the
    metrics with "heldout_phantoms": how many were scored and the seeds skipped as not drawable."""
    from ..errors import ParameterError
    from ..progress import silent, sub_progress

    if n_phantoms < 1:
        raise ParameterError(f"--phantoms must be at least 1, got {n_phantoms}.")
    progress = progress or silent
    # drawing them takes ~0.3 s each: report it, not half a minute of silence
    phantoms, skipped = heldout_phantoms(n_phantoms, first_seed, sub_progress(progress, 0.0, 0.1))
    if not phantoms:
        raise ParameterError(f"none of the {n_phantoms} held-out phantoms from seed {first_seed} can be drawn "
                             f"(their lesions do not fit in the gland); use another --first-seed.")
    # "auto": the detector's own device choice (first GPU, else CPU)
    metrics = score_phantoms(phantoms, model, out, bootstrap, "auto", sub_progress(progress, 0.1, 1.0))
    metrics["heldout_phantoms"] = {"scored": len(phantoms), "skipped_seeds": skipped}
    return metrics


def score_phantoms(phantoms, model: str, out: Path, bootstrap: int, device: str = "cpu", progress=None) -> dict:
    """Run each phantom through the pipeline with `model` (its true prostate and zones, no
    registration), write out/detections.json and out/ground-truth.json, score those files as
    `prostate-cad evaluate` does (out/evaluation: metrics.json, report.md, ROC plots) and
    return the metrics as written."""
    from ..evaluation.evaluate import evaluate
    from ..evaluation.report import write_report
    from ..formats import (DetectionSet, GroundTruthSet, read_detections, read_ground_truth, write_detections,
                           write_ground_truth)
    from ..models.package import find_model
    from ..output_files import staged_output_dir
    from ..pipeline import Pipeline, load_detector
    from ..progress import silent, sub_progress

    progress = progress or silent
    pkg = find_model(model, task="detector")
    detector = load_detector(pkg, device)  # loaded once for every phantom
    detections = []
    for i, phantom in enumerate(phantoms):
        progress(0.9 * i / len(phantoms), f"held-out phantom {i + 1}/{len(phantoms)}")
        run = Pipeline(phantom.case, pkg, register_preset=None, device=device, detector=detector)
        detections.append(run.detect().detections)
    out.mkdir(parents=True, exist_ok=True)
    model_info = {"name": pkg.name, "version": pkg.version}
    write_detections(DetectionSet(detections, model=model_info), out / "detections.json")
    write_ground_truth(GroundTruthSet([p.ground_truth for p in phantoms]), out / "ground-truth.json")
    metrics = evaluate(read_detections(out / "detections.json"), read_ground_truth(out / "ground-truth.json"),
                       bootstrap=bootstrap, with_dice=False, progress=sub_progress(progress, 0.9, 1.0))
    with staged_output_dir(out / "evaluation", overwrite=True) as stage:  # rewritten with detections.json
        write_report(metrics, stage)
    return json.loads((out / "evaluation" / "metrics.json").read_text())
