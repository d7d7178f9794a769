"""`prostate-cad evaluate` end to end: phantom ground truth, a synthetic detector, files and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib import cli
from ProstateLesionCADLib.evaluation import evaluate
from ProstateLesionCADLib.formats import (Detection, DetectionCase, DetectionSet, GroundTruthCase, GroundTruthSet,
                                          read_detections, read_ground_truth, write_detections, write_ground_truth)
from ProstateLesionCADLib.phantoms.generate import make_phantom



def _probability_map(lesion_mask: sitk.Image, centres: list[tuple[float, float, float]], radius_mm: float) -> sitk.Image:
    """A blob per detected lesion on a coarser grid than the T2 mask (1.25 x 1.25 x 3 mm)."""
    ref = sitk.Image([s // 2 for s in lesion_mask.GetSize()[:2]] + [lesion_mask.GetSize()[2]], sitk.sitkFloat32)
    ref.SetSpacing((lesion_mask.GetSpacing()[0] * 2, lesion_mask.GetSpacing()[1] * 2, lesion_mask.GetSpacing()[2]))
    ref.SetOrigin(lesion_mask.GetOrigin())
    ref.SetDirection(lesion_mask.GetDirection())
    size = ref.GetSize()
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3).astype(float)
    pts = np.array(ref.GetOrigin()) + (idx * ref.GetSpacing()) @ np.array(ref.GetDirection()).reshape(3, 3).T
    prob = np.zeros(len(pts))
    for c in centres:
        d = np.linalg.norm(pts - np.asarray(c), axis=1)
        prob = np.maximum(prob, np.exp(-0.5 * (d / radius_mm) ** 4))
    img = sitk.GetImageFromArray(prob.reshape(size).transpose(2, 1, 0).astype(np.float32))
    img.CopyInformation(ref)
    return img


CASE_GGG = [[0, 2], [1, 3], [0], [3, 1], [0, 0], [2], [], [1, 0]]  # 12 lesions; patients 5/4/2 positive


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    """Ground truth from phantoms; detections from a synthetic detector: perturbed centres, decoys, a miss."""
    root = tmp_path_factory.mktemp("phantom_eval")
    rng = np.random.default_rng(42)
    gt_cases, det_cases = [], []
    for i, gggs in enumerate(CASE_GGG):
        ph = make_phantom(100 + i, ggg=gggs, size_xy=64, n_slices=12, spacing=(1.25, 1.25, 3.0), with_dce=False,
                          with_ktrans=False,
                          case_id=f"Phantom-{i}")
        gt = ph.ground_truth
        mask_path = root / f"{gt.case_id}-lesions.nrrd"
        sitk.WriteImage(ph.lesion_mask, str(mask_path), True)
        gt_cases.append(GroundTruthCase(gt.case_id, gt.lesions, gt.patient_ggg, mask_path))
        dets, found = [], []
        for lesion in gt.lesions:
            if i == 3 and lesion.id == 1:
                continue  # a missed GGG3 lesion: score 0 at lesion level
            centre = tuple(np.asarray(lesion.center_lps) + np.r_[rng.normal(0, 1.5, 2), 0.0])  # in-slice error
            found.append(centre)
            score = float(np.clip(0.15 + 0.22 * lesion.ggg + rng.normal(0, 0.04), 0.01, 0.99))
            dets.append(Detection(len(dets) + 1, lesion.ggg, score, centre))
        size = ph.lesion_mask.GetSize()
        middle = np.array(ph.lesion_mask.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in size]))
        while len(dets) < len(found) + 2:  # decoys at least 20 mm from every lesion, low scores, any GGG
            centre = middle + np.r_[rng.uniform(-25, 25, 2), rng.uniform(-6, 6)]
            if all(np.linalg.norm(centre - np.asarray(l.center_lps)) > 20 for l in gt.lesions):
                dets.append(Detection(len(dets) + 1, int(rng.integers(1, 4)), float(rng.uniform(0.05, 0.3)),
                                      tuple(centre)))
        sitk.WriteImage(_probability_map(ph.lesion_mask, found, 3.0), str(root / f"{gt.case_id}-prob.nrrd"), True)
        det_cases.append(DetectionCase(gt.case_id, dets, root / f"{gt.case_id}-prob.nrrd"))
    write_ground_truth(GroundTruthSet(gt_cases), root / "gt.json")
    write_detections(DetectionSet(det_cases, {"name": "synthetic", "version": "0"}), root / "detections.json")
    return root


def test_evaluate_command_on_phantom_run(phantom_run, capsys):
    out = phantom_run / "eval"
    rc = cli.main(["evaluate", "--detections", str(phantom_run / "detections.json"),
                   "--ground-truth", str(phantom_run / "gt.json"), "--out", str(out), "--bootstrap", "200",
                   "--froc", "--froc-same-slice"])
    printed = capsys.readouterr().out
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("GGG>=1", "GGG>=2", "GGG>=3"):
        for level in ("lesion", "patient"):
            entry = metrics[key][level]
            assert {"n", "n_positive", "auc", "auc_ci", "working_points"} <= set(entry)
            assert set(entry["working_points"]) == {"max_sensitivity", "balanced"}
            assert entry["auc_ci"]["n_resamples"] == 200
            wp = entry["working_points"]["max_sensitivity"]
            assert {"threshold", "sensitivity", "specificity", "ppv", "npv", "tp", "fp", "tn", "fn"} <= set(wp)
            assert (out / f"roc_ggg{key[-1]}_{level}.png").stat().st_size > 5000
    # 12 lesions: 5 GGG0, 3 GGG1, 2 GGG2, 2 GGG3 (one GGG3 missed); scores rise with the GGG
    assert [(metrics[k]["lesion"]["n_positive"], metrics[k]["patient"]["n_positive"]) for k in
            ("GGG>=1", "GGG>=2", "GGG>=3")] == [(7, 5), (4, 4), (2, 2)]
    lesion2 = metrics["GGG>=2"]["lesion"]
    assert lesion2["n"] == 12 and lesion2["auc"] >= 0.85
    # the missed lesion (score 0) cannot be reached by a threshold above the lowest score
    assert lesion2["working_points"]["max_sensitivity"]["sensitivity"] == 0.75
    assert lesion2["working_points"]["max_sensitivity"]["specificity"] == 1.0
    assert metrics["GGG>=1"]["patient"]["auc"] > 0.8
    # the library call on the same files gives the same numbers
    again = evaluate(read_detections(phantom_run / "detections.json"), read_ground_truth(phantom_run / "gt.json"),
                     bootstrap=200, with_froc=True)
    assert again["GGG>=2"]["lesion"]["auc"] == lesion2["auc"]
    assert again["GGG>=2"]["lesion"]["auc_ci"] == lesion2["auc_ci"]
    # DSC of blobs of 3 mm around the detected centres against the phantom lesions
    assert metrics["dice"]["n_patients"]["0.25"] == len(CASE_GGG) - 1  # the lesion-free case has no DSC
    assert 0.3 < metrics["dice"]["mean"]["0.25"] < 1.0
    # FROC: 6 of 7 GGG>=1 lesions found in-slice within 5 mm before any decoy (decoys score <= 0.3)
    f1 = metrics["froc"]["GGG>=1"]
    assert f1["n_lesions"] == 7 and f1["hit_rule"]["same_slice"] is True
    assert f1["hit_rule"]["cases_using_lesion_masks"] == 5
    assert f1["sensitivity_at_fp"] == {"0.5": pytest.approx(6 / 7), "1": pytest.approx(6 / 7), "2": pytest.approx(6 / 7)}
    assert f1["points"][-1]["fp_per_patient"] == 2.0
    assert (out / "froc.png").is_file() and (out / "scores.json").is_file()
    report = (out / "report.md").read_text()
    assert "| Significance criterion | Level (N+/N) | AUC [95% CI] |" in printed
    assert "| GGG≥2 | Lesion (4/12) |" in report and "| GGG≥2 | Patient (4/8) |" in printed
    assert "FROC (hit: within 5 mm of the lesion and in the same slice)" in report


def _cli(args, capsys):
    rc = cli.main(["evaluate", *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"format": "prostate-cad-detections/7", "cases": []}', "unknown format"),
    ('{"format": "prostate-cad-detections/1", "cases": [{"case_id": "A", "detections": [{"ggg": 1}]}]}',
     "needs a numeric 'score'"),
])
def test_bad_detections_fail_cleanly_without_output(tmp_path, phantom_run, capsys, content, message):
    bad = tmp_path / "d.json"
    bad.write_text(content)
    out = tmp_path / "eval"
    rc, _, err = _cli(["--detections", str(bad), "--ground-truth", str(phantom_run / "gt.json"),
                       "--out", str(out)], capsys)
    assert rc == 2 and message in err and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(".eval*"))


def test_missing_cases_error_and_policies_on_the_command_line(tmp_path, capsys):
    gt = tmp_path / "gt.json"
    write_ground_truth(GroundTruthSet([GroundTruthCase("A", []), GroundTruthCase("B", [])]), gt)
    dets = tmp_path / "d.json"
    write_detections(DetectionSet([DetectionCase("A", [Detection(1, 2, 0.5, (0.0, 0.0, 0.0))])]), dets)
    out = tmp_path / "eval"
    rc, _, err = _cli(["--detections", str(dets), "--ground-truth", str(gt), "--out", str(out)], capsys)
    assert rc == 2 and "(B)" in err and not out.exists()
    rc, printed, _ = _cli(["--detections", str(dets), "--ground-truth", str(gt), "--out", str(out),
                           "--missing-cases", "empty", "--criteria", "2"], capsys)
    assert rc == 0 and "undefined (no positives)" in printed and "Missing cases (policy 'empty'" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["GGG>=2"]["patient"]["auc"] is None and "no positive" in metrics["GGG>=2"]["patient"]["note"]
    assert metrics["cases"]["missing"]["ground_truth_without_detections"] == ["B"]
    assert "GGG>=1" not in metrics
    rc, _, err = _cli(["--detections", str(dets), "--ground-truth", str(gt), "--out", str(tmp_path / "x"),
                       "--criteria", "1,x"], capsys)
    assert rc == 2 and "--criteria" in err and not (tmp_path / "x").exists()
    write_ground_truth(GroundTruthSet([GroundTruthCase("A", [], lesion_mask=tmp_path / "gone.nrrd")]), gt)
    rc, _, err = _cli(["--detections", str(dets), "--ground-truth", str(gt), "--out", str(tmp_path / "z")], capsys)
    assert rc == 2 and "gone.nrrd: lesion mask of case 'A' file not found" in err and not (tmp_path / "z").exists()


def test_thresholds_file_on_the_command_line(tmp_path, phantom_run, capsys):
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(json.dumps({"GGG>=2": {"a_priori": 0.4}}))
    out = tmp_path / "eval"
    rc, printed, _ = _cli(["--detections", str(phantom_run / "detections.json"), "--ground-truth",
                           str(phantom_run / "gt.json"), "--out", str(out), "--bootstrap", "0", "--no-dice",
                           "--thresholds", str(thresholds), "--compare-published", "prostatex"], capsys)
    assert rc == 0 and "At given thresholds (file " in printed
    assert "Table 1 (ProstateX test set)" in printed and "| GGG≥2 | Lesion (13/69) | 0.959 | 0.028 | 1.000 | 0.786 |" in printed
    given = json.loads((out / "metrics.json").read_text())["GGG>=2"]["lesion"]["given_thresholds"]["a_priori"]
    assert given["threshold"] == 0.4 and given["tp"] + given["fn"] == 4
    thresholds.write_text("[1, 2]")
    rc, _, err = _cli(["--detections", str(phantom_run / "detections.json"), "--ground-truth",
                       str(phantom_run / "gt.json"), "--out", str(tmp_path / "y"), "--thresholds", str(thresholds)],
                      capsys)
    assert rc == 2 and "expected a JSON object" in err and not (tmp_path / "y").exists()
