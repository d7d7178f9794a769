"""Evaluation rules on small hand-computed cases (Pellicer-Valero et al. 2022 "Lesion
matching and evaluation"; FocalNet FROC, Cao et al. 2019 Sec. II-E3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib.errors import CaseError, FormatError, ModelError, ParameterError
from ProstateLesionCADLib.evaluation import (HitRule, evaluate, froc, lesion_scores, match_lesion, metrics_at,
                                             patient_score, roc_auc, thresholds_block, working_points)
from ProstateLesionCADLib.evaluation.bootstrap import resample_counts, sample_weights, weighted_auc
from ProstateLesionCADLib.evaluation.dice import case_dice
from ProstateLesionCADLib.evaluation.report import markdown_report
from ProstateLesionCADLib.evaluation.thresholds import load_given_thresholds, read_thresholds_file
from ProstateLesionCADLib.formats import (Detection, DetectionCase, DetectionSet, GroundTruthCase, GroundTruthSet,
                                          Lesion)
from ProstateLesionCADLib.models.package import write_model_card


def det(i, ggg, score, center):
    return Detection(i, ggg, score, tuple(float(v) for v in center))


def lesion(i, ggg, center, label=None):
    return Lesion(i, ggg, tuple(float(v) for v in center), label)


# ---------------------------------------------------------------- ROC, AUC, working points

def test_auc_counts_ties_as_half_and_is_undefined_without_a_class():
    # pairs: (0.5 vs 0.5) = 1/2, (0.5 vs 0.2) = 1, (0.8 vs 0.5) = 1, (0.8 vs 0.2) = 1 -> 3.5 / 4
    assert roc_auc([0.5, 0.5, 0.2, 0.8], [1, 0, 0, 1]) == pytest.approx(0.875)
    assert roc_auc([0.3, 0.3, 0.3], [1, 0, 1]) == pytest.approx(0.5)
    assert roc_auc([0.0, 0.0], [0, 1]) == pytest.approx(0.5)  # two undetected lesions
    assert roc_auc([0.9, 0.1], [0, 1]) == 0.0
    assert roc_auc([0.1, 0.2], [0, 0]) is None and roc_auc([0.1, 0.2], [1, 1]) is None


def test_positive_rule_is_score_above_threshold_minus_1e4():
    m = metrics_at([0.49995, 0.49985, 0.7, 0.1], [1, 1, 0, 0], 0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (1, 1, 1, 1)
    assert m["sensitivity"] == 0.5 and m["specificity"] == 0.5 and m["ppv"] == 0.5 and m["npv"] == 0.5
    none_called = metrics_at([0.1, 0.2], [1, 0], 0.9)
    assert none_called["ppv"] is None and none_called["npv"] == 0.5


def test_working_points_hand_computed():
    # positives 0.9 0.7 0.3 0.0 ; negatives 0.5 0.4 0.35 0.0 0.0 (lowest score 0 = undetected)
    scores = [0.9, 0.7, 0.3, 0.0, 0.5, 0.4, 0.35, 0.0, 0.0]
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0]
    wp = working_points(scores, labels)
    # max sensitivity above the lowest score: 3/4 at t <= 0.3; the highest such threshold is 0.3
    ms = wp["max_sensitivity"]
    assert ms["threshold"] == pytest.approx(0.3)
    assert (ms["tp"], ms["fn"], ms["fp"], ms["tn"]) == (3, 1, 3, 2)
    assert ms["sensitivity"] == 0.75 and ms["specificity"] == pytest.approx(0.4)
    assert ms["ppv"] == 0.5 and ms["npv"] == pytest.approx(2 / 3)
    # sens x spec: t=0.3 .30, 0.35 .20, 0.4 .30, 0.5 .40, 0.7 .50, 0.9 .25 -> balanced at 0.7
    b = wp["balanced"]
    assert b["threshold"] == pytest.approx(0.7) and b["sensitivity"] == 0.5 and b["specificity"] == 1.0


def test_balanced_ties_prefer_similar_sens_spec_then_higher_threshold():
    # t=0.6: sens 1, spec 1/2; t=0.8: sens 1/2, spec 1 (same product, same gap) -> 0.8
    assert working_points([0.8, 0.6, 0.7, 0.1], [1, 1, 0, 0])["balanced"]["threshold"] == pytest.approx(0.8)
    # t=0.2: sens 1, spec 1/3 (.333) ; t=0.5: 2/3 x 2/3 (.444) ; t=0.9: 1/3 x 1 -> 0.5
    s, y = [0.9, 0.5, 0.2, 0.6, 0.3, 0.1], [1, 1, 1, 0, 0, 0]
    assert working_points(s, y)["balanced"]["threshold"] == pytest.approx(0.5)
    # t=0.5: 0.75 x 0.4 and t=0.9: 0.6 x 0.5 tie on paper although 0.75 * 0.4 > 0.3 in floating
    # point; |0.75 - 0.4| = 0.35 > |0.6 - 0.5| = 0.1 -> 0.9
    s = [0.9] * 12 + [0.5] * 3 + [0.0] * 5 + [0.95] * 5 + [0.5] + [0.0] * 4
    y = [1] * 20 + [0] * 10
    assert 0.75 * 0.4 != 0.6 * 0.5
    assert working_points(s, y)["balanced"]["threshold"] == pytest.approx(0.9)


def test_working_points_undefined_without_positives_and_single_score_noted():
    assert working_points([0.2, 0.4], [0, 0]) == {"max_sensitivity": None, "balanced": None}
    wp = working_points([0.0, 0.0, 0.0], [1, 0, 1])  # nothing detected at all
    assert wp["max_sensitivity"]["threshold"] == 0.0 and "one score" in wp["max_sensitivity"]["note"]


# ---------------------------------------------------------------- lesion matching

def test_candidate_at_exactly_15mm_is_not_matched():
    dets = [det(1, 2, 0.9, (15.0, 0, 0))]
    assert match_lesion((0, 0, 0), dets) == (None, None)
    found, d = match_lesion((0, 0, 0), [det(1, 2, 0.9, (14.999, 0, 0))])
    assert found.id == 1 and d == pytest.approx(14.999)
    gt = GroundTruthCase("P", [lesion(1, 2, (0, 0, 0))])
    assert lesion_scores(gt, DetectionCase("P", dets), 2)[0].score == 0.0


def test_matching_prefers_nearer_lower_score_detection_by_k():
    dets = [det(1, 2, 0.5, (3, 0, 0)), det(2, 2, 0.9, (0, 9, 0))]
    # 0.5 + 2(1 - 3/15) = 2.1  vs  0.9 + 2(1 - 9/15) = 1.7 -> the nearer, lower-score detection
    assert match_lesion((0, 0, 0), dets)[0].id == 1
    assert match_lesion((0, 0, 0), dets, k_match=0.0)[0].id == 2  # score alone
    # 0.95 + 2(1 - 4.5/15) = 2.35 beats 2.1
    assert match_lesion((0, 0, 0), dets + [det(3, 2, 0.95, (0, 0, 4.5))])[0].id == 3
    gt = GroundTruthCase("P", [lesion(1, 3, (0, 0, 0))])
    scored = lesion_scores(gt, DetectionCase("P", dets), 2)[0]
    assert (scored.score, scored.detection_id, scored.positive) == (0.5, 1, True)


def test_predicted_ggg_filters_detections_per_criterion():
    gt = GroundTruthCase("P", [lesion(1, 3, (0, 0, 0)), lesion(2, 1, (40, 0, 0))])
    dc = DetectionCase("P", [det(1, 1, 0.8, (1, 0, 0)), det(2, 3, 0.4, (0, 1, 0)), det(3, 0, 0.99, (40, 0, 0))])
    by_k = {k: [x.score for x in lesion_scores(gt, dc, k)] for k in (1, 2, 3)}
    assert by_k == {1: [0.8, 0.0], 2: [0.4, 0.0], 3: [0.4, 0.0]}  # the GGG0 detection never counts
    assert [x.positive for x in lesion_scores(gt, dc, 2)] == [True, False]
    assert [patient_score(gt, dc, k).score for k in (1, 2, 3)] == [0.8, 0.4, 0.4]


def test_patient_ggg_overrides_lesions_and_empty_detections_score_zero():
    biopsy = GroundTruthCase("A", [lesion(1, 1, (0, 0, 0))], patient_ggg=3)
    lesion_only = GroundTruthCase("B", [lesion(1, 2, (0, 0, 0))], patient_ggg=0)
    nothing = GroundTruthCase("C", [])
    assert [patient_score(biopsy, None, k).positive for k in (1, 2, 3)] == [True, True, True]
    assert [patient_score(lesion_only, None, k).positive for k in (1, 2, 3)] == [True, True, False]
    assert [patient_score(nothing, DetectionCase("C", []), k).positive for k in (1, 2, 3)] == [False] * 3
    assert patient_score(biopsy, DetectionCase("A", []), 1).score == 0.0
    assert lesion_scores(biopsy, DetectionCase("A", []), 1)[0].score == 0.0


# ---------------------------------------------------------------- evaluate()

def _small_sets():
    gt = GroundTruthSet([
        GroundTruthCase("A", [lesion(1, 2, (0, 0, 0)), lesion(2, 0, (30, 0, 0))]),
        GroundTruthCase("B", [lesion(1, 1, (0, 0, 0))], patient_ggg=2),
        GroundTruthCase("C", [lesion(1, 2, (0, 0, 0))]),
        GroundTruthCase("D", [])])
    ds = DetectionSet([
        DetectionCase("A", [det(1, 2, 0.6, (3, 0, 0)), det(2, 1, 0.3, (30, 2, 0))]),
        DetectionCase("B", [det(1, 2, 0.4, (50, 0, 0))]),
        DetectionCase("C", [det(1, 2, 0.9, (1, 1, 1))]),
        DetectionCase("D", [det(1, 1, 0.2, (1, 1, 1))])], model={"name": "toy", "version": "1"})
    return ds, gt


def test_evaluate_hand_computed_levels_and_undefined_criterion():
    ds, gt = _small_sets()
    r = evaluate(ds, gt, bootstrap=200, seed=1)
    l1 = r["GGG>=1"]["lesion"]
    # GGG>=1 lesions: A1 (pos, 0.6), A2 (GGG0 neg, 0.3), B1 (pos, 0: detection 50 mm away), C1 (pos, 0.9)
    assert (l1["n"], l1["n_positive"]) == (4, 3) and l1["auc"] == pytest.approx(2 / 3)
    assert l1["working_points"]["max_sensitivity"]["threshold"] == pytest.approx(0.6)
    p1 = r["GGG>=1"]["patient"]
    # patients A 0.6 (+), B 0.4 (+ by biopsy), C 0.9 (+), D 0.2 (-) -> AUC 1
    assert (p1["n"], p1["n_positive"], p1["auc"]) == (4, 3, 1.0)
    assert p1["working_points"]["max_sensitivity"]["threshold"] == pytest.approx(0.4)
    g3 = r["GGG>=3"]
    assert g3["lesion"]["auc"] is None and "no positive" in g3["lesion"]["note"]
    assert g3["lesion"]["working_points"] == {"max_sensitivity": None, "balanced": None}
    assert g3["lesion"]["auc_ci"] is None
    ci = r["GGG>=2"]["patient"]["auc_ci"]
    assert ci["n_resamples"] == 200 and ci["seed"] == 1 and 0 < ci["n_valid"] <= 200
    table = markdown_report(r)
    assert "| GGG≥3 | Lesion (0/4) | undefined (no positives) |" in table
    assert "| GGG≥1 | Lesion (3/4) | 0.667 [" in table
    # PPV/NPV table: GGG>=1 lesion at t = 0.6: TP 2 (A1, C1), FP 0, TN 1 (A2), FN 1 (B1)
    assert "| GGG≥1 | Lesion (3/4) | 1.000 | 0.500 | 1.000 | 0.500 |" in table


def test_thresholds_block_for_model_packages():
    ds, gt = _small_sets()
    block = thresholds_block(evaluate(ds, gt, bootstrap=0), computed_on="fold 0 validation")
    # GGG>=1 lesion: positives 0.6, 0, 0.9 / negative 0.3 -> both working points at 0.6;
    # GGG>=2 lesion: positives 0.6, 0.9 / negatives 0, 0 -> max sensitivity 0.6, balanced 0.6
    assert block == {"GGG>=1": {"max_sensitivity": 0.6, "balanced": 0.6, "computed_on": "fold 0 validation"},
                     "GGG>=2": {"max_sensitivity": 0.6, "balanced": 0.6, "computed_on": "fold 0 validation"}}
    patient = thresholds_block(evaluate(ds, gt, bootstrap=0, criteria=[1]), level="patient")
    assert patient == {"GGG>=1": {"max_sensitivity": 0.4, "balanced": 0.4}}


def test_bootstrap_is_seeded_and_matches_explicit_resamples():
    ds, gt = _small_sets()
    a = evaluate(ds, gt, bootstrap=300, seed=7)["GGG>=1"]["lesion"]["auc_ci"]
    b = evaluate(ds, gt, bootstrap=300, seed=7)["GGG>=1"]["lesion"]["auc_ci"]
    assert a == b
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(30), 1)  # many ties
    labels = rng.random(30) < 0.4
    owners = rng.integers(0, 8, 30)
    counts = resample_counts(8, 50, seed=5)
    fast = weighted_auc(scores, labels, sample_weights(counts, owners))
    drawn = np.random.default_rng(5).integers(0, 8, size=(50, 8))
    for r in range(50):
        idx = np.concatenate([np.flatnonzero(owners == p) for p in drawn[r]])
        expected = roc_auc(scores[idx], labels[idx])
        assert (np.isnan(fast[r]) if expected is None else fast[r] == pytest.approx(expected))
    assert weighted_auc(scores, labels, np.ones((1, 30)))[0] == pytest.approx(roc_auc(scores, labels))


def test_missing_cases_policies():
    ds, gt = _small_sets()
    partial = DetectionSet([c for c in ds.cases if c.case_id != "C"] + [DetectionCase("Z", [])])
    with pytest.raises(FormatError, match="1 ground-truth case.*C.*--missing-cases"):
        evaluate(partial, gt, bootstrap=0)
    empty = evaluate(partial, gt, bootstrap=0, missing_cases="empty")
    assert empty["cases"]["n_evaluated"] == 4
    assert empty["cases"]["missing"]["ground_truth_without_detections"] == ["C"]
    assert empty["cases"]["missing"]["detections_without_ground_truth"] == ["Z"]
    assert [x["score"] for x in empty["scores"]["GGG>=2"]["patient"]] == [0.6, 0.4, 0.0, 0.0]
    skip = evaluate(partial, gt, bootstrap=0, missing_cases="skip")
    assert skip["cases"]["evaluated"] == ["A", "B", "D"]
    with pytest.raises(FormatError, match="absent from the ground truth"):
        evaluate(DetectionSet(ds.cases + [DetectionCase("Z", [])]), gt, bootstrap=0)
    with pytest.raises(ParameterError, match="--criteria"):
        evaluate(ds, gt, criteria=[4])


def test_given_thresholds_from_file_and_model_package(tmp_path):
    ds, gt = _small_sets()
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"format": "prostate-cad-thresholds/1", "GGG>=2": {"a_priori": 0.5}}))
    given = read_thresholds_file(path)
    r = evaluate(ds, gt, criteria=[2], bootstrap=0, given_thresholds=given, thresholds_source="file")
    m = r["GGG>=2"]["lesion"]["given_thresholds"]["a_priori"]
    # GGG>=2 lesions: A1 0.6 (+), A2 0.0 (-; GGG1 detection ignored), B1 0 (-), C1 0.9 (+)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 0, 2, 0)
    # patients: A 0.6 (+), B 0.4 (+ by patient_ggg 2), C 0.9 (+), D 0.0 (-; its GGG1 detection is ignored)
    mp = r["GGG>=2"]["patient"]["given_thresholds"]["a_priori"]
    assert (mp["tp"], mp["fp"], mp["tn"], mp["fn"]) == (2, 0, 1, 1)
    assert r["GGG>=2"]["patient"]["given_thresholds_source"] == "file"
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "w.bin").write_bytes(b"0")
    write_model_card(tmp_path / "pkg", {"name": "toy", "version": "2", "task": "detector", "intended_use": "test",
                                        "thresholds": {"GGG>=2": {"max_sensitivity": 0.03, "balanced": 0.1,
                                                                  "computed_on": "training folds"}}}, ["w.bin"])
    block, source = load_given_thresholds(str(tmp_path / "pkg"))
    assert block == {"GGG>=2": {"max_sensitivity": 0.03, "balanced": 0.1}} and "training folds" in source
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"GGG>2": {"balanced": 0.1}}))
    with pytest.raises(FormatError, match="unknown criterion 'GGG>2'"):
        read_thresholds_file(bad)
    with pytest.raises(ModelError, match="No model named"):
        load_given_thresholds("no-such-model-anywhere")


# ---------------------------------------------------------------- DSC

def _image(array_zyx, spacing, origin):
    img = sitk.GetImageFromArray(array_zyx)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


def _dice_pair():
    mask = np.zeros((4, 10, 10), np.uint8)
    mask[1:3, 3:7, 3:7] = 1  # 32 voxels, x and y 3..6, slices 1..2
    mask_img = _image(mask, (1.0, 1.0, 3.0), (0.0, 0.0, 0.0))
    # probability map on a finer, shifted grid: 0.5 mm in-plane from x = y = 2 mm
    prob = np.zeros((4, 12, 12), np.float32)
    x = 2.0 + 0.5 * np.arange(12)
    y = 2.0 + 0.5 * np.arange(12)
    for k in (1, 2):
        for j, yy in enumerate(y):
            for i, xx in enumerate(x):
                if 3 <= yy <= 6 and 3 <= xx <= 4.5:
                    prob[k, j, i] = 0.6
                elif 3 <= yy <= 6 and 4.5 < xx <= 7:
                    prob[k, j, i] = 0.3
    return _image(prob, (0.5, 0.5, 3.0), (2.0, 2.0, 0.0)), mask_img


def test_dice_resamples_map_onto_mask_grid():
    prob, mask = _dice_pair()
    d = case_dice(prob, mask)
    # 0.5: x 3..4 -> 16 voxels, all inside -> 2*16/(16+32); 0.25: x 3..7 -> 40, 32 inside -> 64/72
    assert d["0.5"] == pytest.approx(2 * 16 / 48) and d["0.25"] == pytest.approx(64 / 72)
    empty = case_dice(_image(np.zeros((4, 10, 10), np.float32), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0)),
                      _image(np.zeros((4, 10, 10), np.uint8), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0)))
    assert empty == {"0.25": None, "0.5": None}
    with pytest.raises(CaseError, match=r"outside \[0, 1\]"):
        case_dice(_image(np.full((4, 10, 10), 255, np.uint8), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0)), mask)


def test_evaluate_dice_per_patient_and_mean(tmp_path):
    prob, mask = _dice_pair()
    sitk.WriteImage(prob, str(tmp_path / "p.nrrd"))
    sitk.WriteImage(mask, str(tmp_path / "m.nrrd"))
    sitk.WriteImage(sitk.Image(mask.GetSize(), sitk.sitkFloat32), str(tmp_path / "zero.nrrd"))
    gt = GroundTruthSet([GroundTruthCase("A", [lesion(1, 2, (4, 4, 4.5))], lesion_mask=tmp_path / "m.nrrd"),
                         GroundTruthCase("B", [lesion(1, 2, (4, 4, 4.5))], lesion_mask=tmp_path / "m.nrrd"),
                         GroundTruthCase("C", [lesion(1, 0, (4, 4, 4.5))], lesion_mask=tmp_path / "m.nrrd")])
    ds = DetectionSet([DetectionCase("A", [], tmp_path / "p.nrrd"), DetectionCase("B", [], tmp_path / "zero.nrrd"),
                       DetectionCase("C", [])])
    r = evaluate(ds, gt, bootstrap=0)
    d = r["dice"]
    assert d["per_patient"]["A"] == {"0.25": pytest.approx(64 / 72), "0.5": pytest.approx(2 / 3)}
    assert d["per_patient"]["B"] == {"0.25": 0.0, "0.5": 0.0}
    assert d["mean"]["0.5"] == pytest.approx(1 / 3) and d["n_patients"]["0.5"] == 2
    assert d["cases_with_mask_but_no_probability_map"] == ["C"]
    assert "mean DSC over patients: 0.444 at 0.25 (n = 2); 0.333 at 0.5 (n = 2)" in markdown_report(r)


# ---------------------------------------------------------------- FROC

def _froc_cases():
    p1 = GroundTruthCase("P1", [lesion(1, 2, (0, 0, 0))])
    p2 = GroundTruthCase("P2", [lesion(1, 3, (0, 0, 0)), lesion(2, 1, (50, 0, 0))])
    d1 = [det(1, 2, 0.9, (3, 0, 0)), det(2, 2, 0.8, (20, 0, 0)), det(3, 2, 0.7, (0, 4, 0))]
    d2 = [det(1, 2, 0.6, (50, 0, 0)), det(2, 3, 0.5, (0, 0, 4.5)), det(3, 1, 0.95, (80, 0, 0))]
    return [(p1, d1, None), (p2, d2, None)]


def test_froc_points_hand_computed():
    f = froc(_froc_cases(), 2, HitRule(5.0))
    got = [(p["threshold"], p["fp_per_patient"], p["sensitivity"]) for p in f["points"]]
    # 0.95 is a GGG1 detection: absent for GGG>=2. 0.8 far away and 0.6 on a GGG1 lesion are false
    # positives; 0.7 hits an already found lesion (no FP); 0.5 is 4.5 mm from the GGG3 lesion.
    assert got == [(None, 0.0, 0.0), (0.9, 0.0, 0.5), (0.8, 0.5, 0.5), (0.7, 0.5, 0.5), (0.6, 1.0, 0.5),
                   (0.5, 1.0, 1.0)]
    assert f["sensitivity_at_fp"] == {"0.5": 0.5, "1": 1.0, "2": 1.0}
    assert (f["n_lesions"], f["n_patients"], f["n_detections"]) == (2, 2, 5)
    same = froc(_froc_cases(), 2, HitRule(5.0, same_slice=True))  # 4.5 mm through-plane: another slice
    assert same["points"][-1] == {"threshold": 0.5, "fp_per_patient": 1.5, "sensitivity": 0.5}
    assert same["sensitivity_at_fp"] == {"0.5": 0.5, "1": 0.5, "2": 0.5}
    assert froc(_froc_cases(), 3, HitRule(5.0))["n_lesions"] == 1
    # FocalNet per-group options: the 0.6 hit on the GGG1 lesion is no longer a false positive, and
    # with all detections the GGG1-predicted 0.95 detection (80 mm away) becomes the first false positive
    ignore = froc(_froc_cases(), 2, HitRule(5.0, ignore_other_lesions=True))
    assert ignore["n_detections_ignored"] == 1 and ignore["points"][-1]["fp_per_patient"] == 0.5
    every = froc(_froc_cases(), 2, HitRule(5.0, all_detections=True))
    assert every["n_detections"] == 6 and every["points"][1] == {"threshold": 0.95, "fp_per_patient": 0.5,
                                                                 "sensitivity": 0.0}
    assert froc([(GroundTruthCase("E", []), [], None)], 2)["sensitivity_at_fp"]["1"] is None


def test_froc_hit_uses_lesion_roi_and_its_slices_when_a_mask_is_given():
    mask = np.zeros((5, 40, 40), np.uint8)
    mask[2, 10:20, 10:20] = 1  # one slice (z = 6 mm), x,y 10..19 mm; centre (14.5, 14.5, 6)
    img = _image(mask, (1.0, 1.0, 3.0), (0.0, 0.0, 0.0))
    gt = GroundTruthCase("P", [lesion(1, 2, (14.5, 14.5, 6.0), label=1)])
    edge = det(1, 2, 0.9, (23.0, 14.5, 6.0))  # 8.5 mm from the centre, 4 mm from the ROI edge
    other_slice = det(2, 2, 0.8, (15.0, 15.0, 9.0))  # 3 mm from the ROI in 3D, but the next slice
    assert froc([(gt, [edge], img)], 2, HitRule(5.0))["sensitivity_at_fp"]["1"] == 1.0
    assert froc([(gt, [edge], None)], 2, HitRule(5.0))["sensitivity_at_fp"]["1"] == 0.0
    assert froc([(gt, [other_slice], img)], 2, HitRule(5.0))["points"][-1]["sensitivity"] == 1.0
    same = froc([(gt, [other_slice], img)], 2, HitRule(5.0, same_slice=True))
    assert same["points"][-1] == {"threshold": 0.8, "fp_per_patient": 1.0, "sensitivity": 0.0}


def test_working_points_match_brute_force_definition_on_random_ties():
    rng = np.random.default_rng(11)
    for _ in range(20):
        n = int(rng.integers(4, 40))
        scores = np.round(rng.random(n), 1) * (rng.random(n) < 0.8)  # ties and undetected zeros
        labels = rng.random(n) < 0.4
        if labels.all() or not labels.any():
            continue
        rows = [metrics_at(scores, labels, t) for t in np.unique(scores)]
        above_lowest = [r for r in rows if r["threshold"] > scores.min()] or rows[:1]
        best = max(r["sensitivity"] for r in above_lowest)
        expected_ms = max(r["threshold"] for r in above_lowest if r["sensitivity"] == best)
        key = lambda r: (round(r["sensitivity"] * r["specificity"], 12),
                         -round(abs(r["sensitivity"] - r["specificity"]), 12), r["threshold"])
        expected_bal = max(rows, key=key)["threshold"]
        wp = working_points(scores, labels)
        assert wp["max_sensitivity"]["threshold"] == expected_ms
        assert wp["balanced"]["threshold"] == expected_bal
