"""Lesion-level AUC of a detector on a large held-out phantom set (`make accuracy`).

The unit test's 40 held-out lesions (Testing/test_detector_heldout.py) keep CI short, but an AUC
on 20 positives has a standard error of about 0.04. This runs the same recipe on more phantoms
(default 96: every ordered pair of grades six times, 192 lesions, 96 of them GGG>=2, centres at
least 15 mm apart, seeds the demo training never used) and scores them with `prostate-cad
evaluate` including bootstrap confidence intervals. About 7 minutes for the demo model on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

FIRST_SEED = 20000  # demo training uses seeds 100..1003, its calibration 60000..60149, the unit test 9001..9024


def heldout_grades(n_phantoms: int) -> list[list[int]]:
    """Two lesions per phantom, cycling through all 16 ordered pairs of GGG 0..3."""
    pairs = list(itertools.product(range(4), repeat=2))
    return [list(pairs[i % len(pairs)]) for i in range(n_phantoms)]


def measure(model: str, out: Path, n_phantoms: int = 96, bootstrap: int = 1000, progress=None,
            first_seed: int = FIRST_SEED) -> dict:
    """Detect on `n_phantoms` held-out phantoms with the detector package `model` (name or folder),
    write out/detections.json, out/ground-truth.json and out/evaluation/metrics.json; return the metrics."""
    from ..errors import ParameterError
    from ..progress import silent, sub_progress
    from .detector_model import demo_phantom

    if n_phantoms < 1:
        raise ParameterError(f"--phantoms must be at least 1, got {n_phantoms}.")
    progress = progress or silent
    phantoms = []  # drawing them takes ~0.3 s each: report it, not half a minute of silence
    for i, ggg in enumerate(heldout_grades(n_phantoms)):
        progress(0.1 * i / n_phantoms, f"drawing held-out phantom {i + 1}/{n_phantoms}")
        seed = first_seed + i
        phantoms.append(demo_phantom(seed, case_id=f"HeldOut-{seed}", ggg=ggg, min_lesion_distance_mm=15.0))
    # "auto": the detector's own device choice (first GPU, else CPU)
    return score_phantoms(phantoms, model, out, bootstrap, "auto", sub_progress(progress, 0.1, 1.0))


def score_phantoms(phantoms, model: str, out: Path, bootstrap: int, device: str = "cpu", progress=None) -> dict:
    """Pre-process each phantom (its true prostate and zones), detect with `model`, and score the
    detections against the phantoms' ground truth with `prostate-cad evaluate` (files under `out`)."""
    from ..cli import main as cli_main
    from ..formats import DetectionSet, GroundTruthSet, write_detections, write_ground_truth
    from ..models.package import find_model
    from ..preprocessing.preprocess import preprocess
    from ..progress import silent
    from ..detection.retina_unet.inference import RetinaUNetDetector
    from ..detection.retina_unet.detect import detect_preprocessed

    progress = progress or silent
    pkg = find_model(model, task="detector")
    detector = RetinaUNetDetector(pkg, device)
    detections = []
    for i, phantom in enumerate(phantoms):
        progress(i / len(phantoms), f"held-out phantom {i + 1}/{len(phantoms)}")
        detections.append(detect_preprocessed(preprocess(phantom.case), pkg, detector=detector, device=device)[0])
    out.mkdir(parents=True, exist_ok=True)
    model_info = {"name": pkg.name, "version": pkg.version}
    write_detections(DetectionSet(detections, model=model_info), out / "detections.json")
    write_ground_truth(GroundTruthSet([p.ground_truth for p in phantoms]), out / "ground-truth.json")
    code = cli_main(["evaluate", "--detections", str(out / "detections.json"), "--ground-truth",
                     str(out / "ground-truth.json"), "--out", str(out / "evaluation"), "--bootstrap", str(bootstrap),
                     "--no-dice"])
    if code != 0:
        raise RuntimeError(f"prostate-cad evaluate failed with exit code {code}.")
    return json.loads((out / "evaluation" / "metrics.json").read_text())


def main(argv=None) -> int:
    from ..errors import CadError
    from ..progress import ConsoleProgress
    from .detector_model import DEMO_NAME

    ap = argparse.ArgumentParser(prog="python -m ProstateLesionCADLib.demo.accuracy", description=__doc__)
    ap.add_argument("--model", default=DEMO_NAME, help="detector package name or folder (default: the demo model)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--phantoms", type=int, default=96)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--first-seed", type=int, default=FIRST_SEED,
                    help="seed of the first held-out phantom (another set: 30000 was the demo model's confirmation)")
    args = ap.parse_args(argv)
    try:
        metrics = measure(args.model, args.out, args.phantoms, args.bootstrap, ConsoleProgress(), args.first_seed)
    except CadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key in ("GGG>=1", "GGG>=2", "GGG>=3"):
        lesion = metrics[key]["lesion"]
        ci = lesion.get("auc_ci") or {}
        bounds = f" (95% CI {ci['low']:.3f}-{ci['high']:.3f})" if "low" in ci else ""
        auc = "undefined (needs positive and negative lesions)" if lesion["auc"] is None else f"{lesion['auc']:.3f}"
        print(f"{key}: lesion AUC {auc}{bounds} on {lesion['n']} lesions, {lesion['n_positive']} positive")
    return 0


if __name__ == "__main__":
    sys.exit(main())
