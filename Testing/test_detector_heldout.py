"""Lesion-level AUC of the shipped demo detector on held-out phantoms.

Held-out phantoms come from the demo training distribution (`demo.detector_model.demo_phantom`)
with seeds the model never saw and a balanced GGG mix, go through the detection pipeline
(`pipeline.Pipeline`: the real pre-processing with the phantoms' true prostate/zone masks, then
the model's fold x epoch ensemble); detections and ground truth are written as JSON and scored
from those files as `prostate-cad evaluate` does (lesion matching within 15 mm, ROC AUC per
criterion).

Their lesion centres lie at least 15 mm apart. With the training distribution's spacing (3 mm
between lesion edges) a GGG0/1 lesion within 15 mm of a GGG>=2 lesion takes that lesion's
detection as its own, so even a perfect detector (one detection per lesion at its centre with
its true GGG) scored only 0.955 on the previous held-out set: the bar would have measured the
phantoms' layout, not the model. `test_heldout_set_is_decidable` checks the ceiling is 1.
"""

from __future__ import annotations

import itertools
import json

import pytest
import SimpleITK as sitk
import torch

from ProstateLesionCADLib.evaluation.evaluate import evaluate
from ProstateLesionCADLib.formats import Detection, DetectionCase, DetectionSet, GroundTruthSet
from ProstateLesionCADLib.commands.accuracy import main as accuracy_main
from ProstateLesionCADLib.demo.accuracy import heldout_grades, score_phantoms
from ProstateLesionCADLib.demo.detector_model import DEMO_NAME, demo_phantom

# seed -> GGG of its lesions: every ordered pair of grades, then two single lesions of each grade:
# 40 lesions, 20 of them GGG>=2
HELD_OUT = {9001 + i: list(pair) for i, pair in enumerate(itertools.product(range(4), repeat=2))}
HELD_OUT.update({9017 + i: [i % 4] for i in range(8)})
# The demo detector must reach GGG>=2 lesion AUC >= 0.95; the shipped package (two training runs in one ensemble)
# reaches 0.97 here (GGG>=3 0.993, GGG>=1 0.943; the single-run packages before it 0.95 / 0.943 / 0.963,
# 0.91 / 0.97 / 0.93 and 0.825 / 0.97 / 0.81); `make accuracy` (192 lesions) gives GGG>=2 0.965
# (95% CI 0.94-0.98) and 0.951 (0.92-0.98) on its confirmation set. The bars are those measured values
# minus a margin (the run is deterministic: fixed seeds, CPU); for GGG>=2 the required 0.95.
MIN_AUC = {"GGG>=1": 0.92, "GGG>=2": 0.95, "GGG>=3": 0.96}


@pytest.fixture(scope="module")
def heldout_phantoms():
    return [demo_phantom(seed, case_id=f"HeldOut-{seed}", ggg=ggg, min_lesion_distance_mm=15.0)
            for seed, ggg in HELD_OUT.items()]


@pytest.fixture(scope="module")
def heldout_metrics(heldout_phantoms, tmp_path_factory):
    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    # the phantoms' true prostate and zones; scored from the written files as prostate-cad evaluate does
    return score_phantoms(heldout_phantoms, DEMO_NAME, tmp_path_factory.mktemp("heldout"), bootstrap=0)


def test_heldout_set_is_decidable(heldout_phantoms):
    """A perfect detector scores AUC 1 on this set: no lesion can borrow a neighbour's detection."""
    truths = [p.ground_truth for p in heldout_phantoms]
    perfect = [DetectionCase(t.case_id, [Detection(i + 1, lesion.ggg, 1.0, tuple(lesion.center_lps))
                                         for i, lesion in enumerate(t.lesions)]) for t in truths]
    metrics = evaluate(DetectionSet(perfect), GroundTruthSet(truths), bootstrap=0, with_dice=False)
    assert all(metrics[key]["lesion"]["auc"] == 1.0 for key in MIN_AUC)


def test_heldout_lesion_auc(heldout_metrics):
    lesion = heldout_metrics["GGG>=2"]["lesion"]
    assert lesion["n"] == 40 and lesion["n_positive"] == 20
    print({key: round(heldout_metrics[key]["lesion"]["auc"], 3) for key in MIN_AUC})
    for key, bar in MIN_AUC.items():
        assert heldout_metrics[key]["lesion"]["auc"] >= bar, (key, heldout_metrics[key]["lesion"]["auc"])


def test_large_heldout_measurement_runs(tmp_path):
    """`make accuracy` (commands/accuracy.py) on two phantoms: writes the inputs and metrics with a CI."""
    assert heldout_grades(17)[:2] == [[0, 0], [0, 1]] and heldout_grades(17)[16] == [0, 0]
    assert accuracy_main(["--out", str(tmp_path), "--phantoms", "2", "--bootstrap", "50"]) == 0
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert metrics["GGG>=1"]["lesion"]["n"] == 4 and (tmp_path / "detections.json").is_file()
    assert metrics["GGG>=1"]["lesion"]["auc_ci"]["n_resamples"] == 50
    assert accuracy_main(["--out", str(tmp_path / "x"), "--phantoms", "0"]) == 2 and not (tmp_path / "x").exists()
    # another held-out set (the one that confirmed the shipped package) from its first seed
    args = ["--out", str(tmp_path / "y"), "--phantoms", "1", "--first-seed", "30000", "--bootstrap", "0"]
    assert accuracy_main(args) == 0
    assert "HeldOut-30000" in (tmp_path / "y" / "ground-truth.json").read_text()
