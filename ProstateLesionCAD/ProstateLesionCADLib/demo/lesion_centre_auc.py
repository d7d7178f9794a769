"""How much the lesion centre written by `grow` moves the lesion-level AUC, on held-out phantoms.

A reader marks a lesion with one point somewhere inside it, not at its centre. `grow` writes the
grown mask's box centre as `center_lps` (the point lesion matching measures to, as the authors'
released `match_lesions` does) and keeps that point as `seed_lps`. This measures both choices:
each lesion of `n_phantoms` held-out phantoms (`demo.accuracy.heldout_phantoms`) gets a seed at a
random voxel of its true mask, is grown from it (the phantom's own deformation as the DWI
transform), and the demo detector's detections are scored (`evaluation.evaluate`, 15 mm) against
three ground truths that differ only in the lesion centre: the phantom's true centre, the seed,
and the grown mask's box centre. Run it as
`python -m ProstateLesionCADLib.demo.lesion_centre_auc [N_PHANTOMS] [FIRST_SEED]`.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import SimpleITK as sitk

CENTRES = ("true", "seed", "box")


def _seeds(phantom, rng):
    from ..lesions.growing import Seed

    labels = sitk.GetArrayFromImage(phantom.lesion_mask)
    seeds = []
    for lesion in phantom.ground_truth.lesions:
        voxels = np.argwhere(labels == lesion.id)  # (z, y, x)
        z, y, x = voxels[rng.integers(len(voxels))]
        point = phantom.lesion_mask.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
        seeds.append(Seed(lesion.id, tuple(float(v) for v in point), lesion.ggg))
    return seeds


def measure(n_phantoms: int = 16, first_seed: int = 20000) -> dict:
    from ..demo.accuracy import heldout_phantoms
    from ..demo.detector_model import DEMO_NAME
    from ..evaluation.evaluate import evaluate
    from ..formats import DetectionSet, GroundTruthCase, GroundTruthSet, Lesion
    from ..coordinates import mask_box_centres
    from ..lesions.growing import grow_lesions, growing_sequences
    from ..models.package import find_model
    from ..pipeline import Pipeline, load_detector

    phantoms, skipped = heldout_phantoms(n_phantoms, first_seed)
    pkg = find_model(DEMO_NAME, task="detector")
    detector = load_detector(pkg, "cpu")
    rng = np.random.default_rng(first_seed)
    detections, truths = [], {name: [] for name in CENTRES}
    offsets = {"seed": [], "box": []}
    for phantom in phantoms:
        detections.append(Pipeline(phantom.case, pkg, register_preset=None, device="cpu",
                                   detector=detector).detect().detections)
        seeds = _seeds(phantom, rng)
        labels, _ = grow_lesions(phantom.case.t2, seeds, growing_sequences(phantom.case, phantom.deformation),
                                 phantom.case.prostate)
        boxes = mask_box_centres(labels)
        gt = phantom.ground_truth
        for name in CENTRES:
            lesions = []
            for lesion, seed in zip(gt.lesions, seeds):
                centre = {"true": lesion.center_lps, "seed": seed.center_lps,
                          "box": boxes.get(seeds.index(seed) + 1, seed.center_lps)}[name]
                lesions.append(Lesion(lesion.id, lesion.ggg, tuple(centre)))
                if name != "true":
                    offsets[name].append(float(np.linalg.norm(np.subtract(centre, lesion.center_lps))))
            truths[name].append(GroundTruthCase(gt.case_id, lesions, gt.patient_ggg))
    result = {"phantoms": len(phantoms), "skipped_seeds": skipped, "lesions": len(offsets["seed"]),
              "distance_to_true_centre_mm": {k: {"mean": round(float(np.mean(v)), 2), "max": round(float(np.max(v)), 2)}
                                             for k, v in offsets.items()}}
    for name in CENTRES:
        metrics = evaluate(DetectionSet(detections), GroundTruthSet(truths[name]), bootstrap=0, with_dice=False)
        aucs = {key: metrics[key]["lesion"]["auc"] for key in ("GGG>=1", "GGG>=2", "GGG>=3")}
        result[name] = {key: None if auc is None else round(auc, 4) for key, auc in aucs.items()}
    return result


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    print(json.dumps(measure(*args), indent=1))
