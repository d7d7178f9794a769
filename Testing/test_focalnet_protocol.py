"""FocalNet's evaluation protocol (Cao et al. 2019, Sec. II-E): annotated slices only, a hit
within 5 mm of the ROI in the same slice whatever the predicted GGG, per-group and index-lesion
FROC, FP per patient at the paper's sensitivities — hand-computed on one small mask."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib import cli
from ProstateLesionCADLib.evaluation import evaluate
from ProstateLesionCADLib.evaluation.focalnet_protocol import focalnet_froc
from ProstateLesionCADLib.evaluation.froc import LesionRegions, index_lesion
from ProstateLesionCADLib.formats import (Detection, DetectionCase, DetectionSet, GroundTruthCase, GroundTruthSet,
                                          Lesion)


def _mask() -> sitk.Image:
    """5 slices of 3 mm (z = 0, 3, .., 12 mm), 1 mm pixels, origin 0."""
    a = np.zeros((5, 40, 40), np.uint8)
    a[2, 10:20, 10:20] = 1  # GGG2, 10 x 10 mm on slice z = 6: the index lesion (larger than lesion 2)
    a[2, 25:29, 25:29] = 2  # GGG2, 4 x 4 mm, same slice
    a[3, 30:35, 30:35] = 3  # GGG1 on slice z = 9
    a[1, 2:6, 2:6] = 4      # a benign (GGG0) finding on slice z = 3
    img = sitk.GetImageFromArray(a)
    img.SetSpacing((1.0, 1.0, 3.0))
    return img


LESIONS = [Lesion(1, 2, (14.5, 14.5, 6.0), 1), Lesion(2, 2, (26.5, 26.5, 6.0), 2),
           Lesion(3, 1, (32.0, 32.0, 9.0), 3), Lesion(4, 0, (3.5, 3.5, 3.0), 4)]


def _dets():
    d = lambda i, ggg, score, c: Detection(i, ggg, score, tuple(float(v) for v in c))
    p1 = [d(1, 1, 0.9, (14.5, 14.5, 6)),   # on the index lesion, predicted GGG1
          d(2, 2, 0.8, (26, 26, 6)),       # on lesion 2 (GGG2, not the index)
          d(3, 1, 0.7, (3, 3, 3)),         # on the benign finding: a false positive
          d(4, 3, 0.95, (14.5, 14.5, 0)),  # slice z = 0 holds no ROI: not evaluated
          d(5, 1, 0.6, (32, 32, 9)),       # on the GGG1 lesion
          d(6, 1, 0.5, (39, 39, 6))]       # annotated slice, far from every lesion: false positive
    p2 = [d(1, 3, 0.99, (0, 0, 0))]        # a patient without lesions has no annotated slice
    return p1, p2


def _curve(f):
    return [(p["threshold"], p["fp_per_patient"], round(p["sensitivity"], 6)) for p in f["points"]]


def test_index_lesion_is_the_highest_grade_then_the_largest():
    regions = LesionRegions(_mask())
    gt = GroundTruthCase("P1", list(reversed(LESIONS)))
    assert index_lesion(gt, regions).id == 1  # lesions 1 and 2 share GGG2; lesion 1 is 12.7 mm across
    assert regions.largest_diameter(1) == pytest.approx(9 * 2 ** 0.5)
    assert index_lesion(gt, None).id == 2  # without the mask: the first of the top grade in the file
    assert index_lesion(GroundTruthCase("B", [LESIONS[3]]), regions) is None  # benign only: no index lesion
    assert index_lesion(GroundTruthCase("C", [LESIONS[2], LESIONS[0]]), None).id == 1


def test_focalnet_protocol_groups_hand_computed():
    p1, p2 = _dets()
    f = focalnet_froc([(GroundTruthCase("P1", LESIONS), p1, _mask()), (GroundTruthCase("P2", []), p2, None)])
    index = f["index lesion"]
    # 0.95 and 0.99 lie on slices without ROI; 0.8 and 0.6 hit other cancers (neither TP nor FP)
    assert index["n_detections_off_annotated_slices"] == 2 and index["n_detections_ignored"] == 2
    assert _curve(index) == [(None, 0.0, 0.0), (0.9, 0.0, 1.0), (0.7, 0.5, 1.0), (0.5, 1.0, 1.0)]
    assert index["hit_rule"]["all_detections"] and index["hit_rule"]["annotated_slices_only"]
    significant = f["clinically significant (GS>=7, GGG>=2)"]
    assert _curve(significant) == [(None, 0.0, 0.0), (0.9, 0.0, 0.5), (0.8, 0.0, 1.0), (0.7, 0.5, 1.0),
                                   (0.5, 1.0, 1.0)]
    every = f["all lesions (GGG>=1)"]
    assert every["n_lesions"] == 3  # the benign finding is no lesion
    assert every["fp_at_sensitivity"] == {"0.6": 0.0, "0.7": 0.5, "0.8": 0.5, "0.9": 0.5}
    assert every["sensitivity_at_fp"] == {"0.5": 1.0, "1": 1.0, "2": 1.0}
    gs33 = f["GS 3+3 (GGG1)"]
    assert _curve(gs33) == [(None, 0.0, 0.0), (0.7, 0.5, 0.0), (0.6, 0.5, 1.0), (0.5, 1.0, 1.0)]
    assert f["GS 3+4 (GGG2)"]["n_lesions"] == 2
    assert f["GS>=4+3 (GGG>=3)"]["n_lesions"] == 0 and f["GS>=4+3 (GGG>=3)"]["fp_at_sensitivity"]["0.8"] is None


def _files(tmp_path):
    sitk.WriteImage(_mask(), str(tmp_path / "m.nrrd"))
    gt = {"format": "prostate-cad-ground-truth/1",
          "cases": [{"case_id": "P1", "lesion_mask": "m.nrrd",
                     "lesions": [{"id": l.id, "ggg": l.ggg, "center_lps": list(l.center_lps), "label": l.label}
                                 for l in LESIONS]},
                    {"case_id": "P2", "lesions": []}]}
    dets = {"format": "prostate-cad-detections/1", "model": {"name": "hand", "version": "1"},
            "cases": [{"case_id": cid, "detections": [{"id": d.id, "ggg": d.ggg, "score": d.score,
                                                       "center_lps": list(d.center_lps)} for d in ds]}
                      for cid, ds in zip(("P1", "P2"), _dets())]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "det.json").write_text(json.dumps(dets))
    return ["--detections", str(tmp_path / "det.json"), "--ground-truth", str(tmp_path / "gt.json"),
            "--bootstrap", "0", "--no-dice"]


def test_evaluate_cli_focalnet_protocol_reports_groups_and_index_lesion(tmp_path, capsys):
    args = _files(tmp_path)
    assert cli.main(["evaluate", *args, "--out", str(tmp_path / "paper"), "--froc-protocol", "focalnet"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((tmp_path / "paper" / "metrics.json").read_text())
    assert metrics["settings"]["froc_protocol"] == "focalnet"
    assert metrics["froc_protocol"]["name"] == "focalnet" and "annotated" in metrics["froc_protocol"]["slices"]
    assert list(metrics["froc"])[:3] == ["index lesion", "clinically significant (GS>=7, GGG>=2)",
                                         "all lesions (GGG>=1)"]
    assert metrics["froc"]["index lesion"]["fp_at_sensitivity"]["0.9"] == 0.0
    assert "| index lesion | 1 | 2 |" in printed and "FP @ Sen. 80%" in printed
    assert "detections on annotated slices only" in printed
    assert (tmp_path / "paper" / "froc.png").is_file()
    # the default protocol is unchanged: GGG-filtered detections on every slice, plus the index lesion
    assert cli.main(["evaluate", *args, "--out", str(tmp_path / "default"), "--froc", "--froc-same-slice"]) == 0
    capsys.readouterr()
    default = json.loads((tmp_path / "default" / "metrics.json").read_text())
    assert list(default["froc"]) == ["GGG>=1", "GGG>=2", "GGG>=3", "index lesion"]
    assert "froc_protocol" not in default and "fp_at_sensitivity" not in default["froc"]["GGG>=1"]
    # 0.99 (P2) and 0.95 (off the annotated slices) are the first false positives here
    assert _curve(default["froc"]["index lesion"])[1:3] == [(0.99, 0.5, 0.0), (0.95, 1.0, 0.0)]
    assert default["froc"]["GGG>=2"]["n_detections"] == 3  # only the GGG>=2-predicted detections
    # the protocol fixes its hit rule
    rc = cli.main(["evaluate", *args, "--out", str(tmp_path / "bad"), "--froc-protocol", "focalnet",
                   "--froc-hit-mm", "10"])
    assert rc == 2 and "fixes the hit rule" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_library_evaluate_takes_the_protocol():
    p1, p2 = _dets()
    gt = GroundTruthSet([GroundTruthCase("P1", LESIONS[:3]), GroundTruthCase("P2", [])])
    r = evaluate(DetectionSet([DetectionCase("P1", p1), DetectionCase("P2", p2)]), gt, bootstrap=0,
                 with_dice=False, froc_protocol="focalnet")
    # no mask: a slice is annotated within half a slice (3 mm) of a lesion centre; hits measure to centres
    assert r["froc"]["index lesion"]["n_detections_off_annotated_slices"] == 3  # z = 0, 3 and patient P2
    every = r["froc"]["all lesions (GGG>=1)"]
    assert every["n_detections"] == 4 and every["points"][-1] == {"threshold": 0.5, "fp_per_patient": 0.5,
                                                                  "sensitivity": 1.0}
