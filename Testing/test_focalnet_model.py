"""FocalNet with really trained weights: the shipped demo model (trained here on phantoms)
detects held-out phantom lesions; training, packaging, `prostate-cad detect` and
`prostate-cad evaluate --froc --voxel-roc` run end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import SimpleITK as sitk

from ProstateLesionCADLib.evaluation.froc import HitRule, froc
from ProstateLesionCADLib.models.package import find_model
from ProstateLesionCADLib.phantoms.generate import make_phantom


# one torch thread: the cores are shared, and oversubscribed OpenMP threads crawl
pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEMO = "focalnet-demo"
HELD_OUT_SEEDS = range(9100, 9110)  # the demo trained (5 folds) on seeds 5000..5059


@pytest.fixture(scope="module")
def demo():
    from ProstateLesionCADLib.detection.focalnet.inference import FocalNetModel
    pkg = find_model(DEMO, task="focalnet")
    return pkg, FocalNetModel.from_package(pkg)


@pytest.fixture(scope="module")
def held_out():
    return [make_phantom(s, with_dce=False, with_ktrans=False) for s in HELD_OUT_SEEDS]


def test_demo_card_says_synthetic(demo):
    pkg, _ = demo
    assert pkg.task == "focalnet" and "synthetic" in pkg.card["intended_use"].lower()
    assert "phantom" in pkg.card["training_data"]
    assert pkg.card["ggg_of_class"] == [0, 1, 2, 3, 3, 3]
    assert set(pkg.card["thresholds"]) >= {"GGG>=1"}


def test_demo_detects_held_out_phantom_lesions(demo, held_out):
    """Sensitivity >= 0.8 at <= 1 false positive per patient (FROC, 5 mm, same slice, GGG>=1)."""
    _, model = demo
    cases = []
    for p in held_out:
        dcase, _, _ = model.detect(p.case, device="cpu", threshold=0.02)
        cases.append((p.ground_truth, dcase.detections, p.lesion_mask))
    result = froc(cases, 1, HitRule(distance_mm=5.0, same_slice=True))
    assert result["n_lesions"] >= 8
    assert result["sensitivity_at_fp"]["1"] >= 0.8, result["sensitivity_at_fp"]
    # detections are FocalNet local maxima: LPS centres inside the T2 volume, GGG 1..3
    det = max((d for _, dets, _ in cases for d in dets), key=lambda d: d.score)
    assert 1 <= det.ggg <= 3 and sum(det.class_scores.values()) == pytest.approx(1.0, abs=1e-6)


def test_detect_and_evaluate_cli(tmp_path, held_out):
    from ProstateLesionCADLib.formats import (DetectionSet, GroundTruthSet, ground_truth_to_dict, read_detections,
                                              read_ground_truth, write_detections)
    from ProstateLesionCADLib.phantoms.generate import write_phantom
    cases, truths = [], []
    for p in held_out[:3]:
        folder = write_phantom(p, tmp_path / "cases" / p.case.case_id)
        out = tmp_path / "det" / p.case.case_id
        run = subprocess.run([sys.executable, "-m", "ProstateLesionCADLib", "detect", str(folder), "--model", DEMO,
                              "--out", str(out), "--device", "cpu"], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        prob = sitk.ReadImage(str(out / "lesion-probability.nrrd"))
        assert prob.GetSize() == p.case.t2.GetSize()
        assert 0.0 <= float(sitk.GetArrayViewFromImage(prob).max()) <= 1.0
        cases.extend(read_detections(out / "detections.json").cases)
    truths = [c for p in held_out[:3]
              for c in read_ground_truth(tmp_path / "cases" / p.case.case_id / "ground-truth.json").cases]
    assert cases and all(d.ggg >= 1 for c in cases for d in c.detections)
    write_detections(DetectionSet(cases), tmp_path / "detections.json")
    (tmp_path / "gt.json").write_text(json.dumps(ground_truth_to_dict(GroundTruthSet(truths), tmp_path / "gt.json")))
    run = subprocess.run([sys.executable, "-m", "ProstateLesionCADLib", "evaluate", "--detections",
                          str(tmp_path / "detections.json"), "--ground-truth", str(tmp_path / "gt.json"),
                          "--out", str(tmp_path / "eval"), "--criteria", "1,2", "--bootstrap", "0", "--no-dice",
                          "--froc", "--froc-same-slice", "--voxel-roc"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "eval" / "froc.png").stat().st_size > 5000
    assert (tmp_path / "eval" / "voxel_roc.png").stat().st_size > 5000
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["voxel_roc"]["n_points"] <= 12 * 3 and "GS>=7" in metrics["voxel_roc"]["tasks"]
    assert "Voxel-level ROC" in (tmp_path / "eval" / "report.md").read_text()
