"""Evaluate a detector's output against ground truth exactly as the main paper does.

Pellicer-Valero et al. 2022, Methods "Lesion matching and evaluation" and Results
(Table 1, Supplementary Tables 1-2, lesion DSC): for each significance criterion GGG>=k,
lesion-level and patient-level ROC AUC with bootstrap 95% CIs over patients, the
`max_sensitivity` and `balanced` working points (sensitivity, specificity, PPV, NPV,
counts), metrics at given (a-priori) thresholds, DSC of the probability maps at 0.25/0.5
and, when asked, FocalNet-style FROC (Cao et al. 2019, Sec. II-E3).

`evaluate(detections, ground_truth, ...) -> dict` works on the in-memory sets of
`formats.py`, so training code can call it on validation folds without files; the
`prostate-cad evaluate` command and `report.py` write it to disk.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ..errors import CaseError, FormatError, ParameterError
from ..formats import DetectionCase, DetectionSet, GroundTruthCase, GroundTruthSet
from ..ggg_palette import criterion_name
from ..image_files import read_image_file
from ..progress import ProgressCallback, silent, sub_progress
from .bootstrap import percentile_ci, resample_counts, sample_weights, weighted_auc, weighted_rate
from .dice import DICE_THRESHOLDS, case_dice, dice_summary
from . import focalnet_protocol
from .froc import (FP_RATES, INDEX_GROUP, CaseHits, HitRule, LesionGroup, LesionRegions, case_hits,
                   criterion_group, froc_from_hits)
from .lesion_matching import DEFAULT_DISTANCE_MM, DEFAULT_K_MATCH, lesion_scores, patient_score
from .roc import auc_note, metrics_at, predicted_positive, roc_auc, working_points

METRICS_FORMAT = "prostate-cad-metrics/1"
MISSING_POLICIES = ("error", "empty", "skip")


def _names(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def pair_cases(detections: DetectionSet, ground_truth: GroundTruthSet, missing_cases: str = "error"
               ) -> tuple[list[tuple[GroundTruthCase, Optional[DetectionCase]]], dict[str, Any]]:
    """Pair GT cases with their detections according to the missing-cases policy.

    - error: any GT case without a detections entry, or detections for a case absent from
      the GT, stops the evaluation with a message naming them;
    - empty: a GT case without an entry is evaluated as having no detections (scores 0);
    - skip: such a GT case is left out.
    Detections of cases absent from the GT cannot be scored; with empty/skip they are
    ignored. Either way the lists are reported.
    """
    if missing_cases not in MISSING_POLICIES:
        raise ParameterError(f"--missing-cases must be one of {', '.join(MISSING_POLICIES)}, got {missing_cases!r}.")
    det_by_case = detections.by_case()
    gt_ids = {c.case_id for c in ground_truth.cases}
    no_detections = [c.case_id for c in ground_truth.cases if c.case_id not in det_by_case]
    no_truth = [c.case_id for c in detections.cases if c.case_id not in gt_ids]
    if missing_cases == "error" and no_detections:
        raise FormatError(f"{len(no_detections)} ground-truth case(s) have no entry in the detections "
                          f"({_names(no_detections)}); use --missing-cases empty to score them 0 or skip to leave them out.")
    if missing_cases == "error" and no_truth:
        raise FormatError(f"The detections contain {len(no_truth)} case(s) absent from the ground truth "
                          f"({_names(no_truth)}); use --missing-cases skip to ignore them.")
    pairs = [(c, det_by_case.get(c.case_id)) for c in ground_truth.cases
             if c.case_id in det_by_case or missing_cases == "empty"]
    if not pairs:
        raise FormatError("No case appears in both the detections and the ground truth; nothing to evaluate.")
    report = {"policy": missing_cases, "ground_truth_without_detections": no_detections,
              "detections_without_ground_truth": no_truth,
              "handling": {"error": "stop", "empty": "scored as without detections",
                           "skip": "left out"}[missing_cases]}
    return pairs, report


def _check_parameters(criteria: Sequence[int], distance_mm: float, k_match: float, bootstrap: int,
                      froc_rule: HitRule) -> None:
    if not criteria or any(k not in (1, 2, 3) for k in criteria):
        raise ParameterError(f"--criteria must list values among 1, 2, 3, got {list(criteria)}.")
    if not distance_mm > 0:
        raise ParameterError(f"--distance-mm must be positive, got {distance_mm}.")
    if not k_match >= 0:
        raise ParameterError(f"--k must be zero or positive, got {k_match}.")
    if bootstrap < 0:
        raise ParameterError(f"--bootstrap must be 0 (no confidence intervals) or a number of resamples, got {bootstrap}.")
    if not froc_rule.distance_mm >= 0 or not froc_rule.slice_mm > 0:
        raise ParameterError("--froc-hit-mm must be zero or positive and the slice thickness positive.")


def _level(scores: np.ndarray, labels: np.ndarray, owners: np.ndarray, counts: np.ndarray, seed: int,
           given: Optional[dict[str, float]], given_source: Optional[str]) -> dict[str, Any]:
    """n, n_positive, auc (+CI), working points (+CIs) and given-threshold metrics of one level."""
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    out: dict[str, Any] = {"n": int(labels.size), "n_positive": n_pos, "n_negative": n_neg,
                           "auc": roc_auc(scores, labels), "auc_ci": None}
    note = auc_note(n_pos, n_neg)
    if note:
        out["note"] = note + " Working points are undefined too."
    points = working_points(scores, labels)
    out["working_points"] = points
    if counts.shape[0] and note is None:
        weights = sample_weights(counts, owners)
        out["auc_ci"] = percentile_ci(weighted_auc(scores, labels, weights), seed)
        for point in points.values():
            if point is not None:
                called = predicted_positive(scores, point["threshold"])
                point["sensitivity_ci"] = percentile_ci(weighted_rate(called, labels, weights), seed)
                point["specificity_ci"] = percentile_ci(weighted_rate(~called, ~labels, weights), seed)
    if given:
        out["given_thresholds"] = {name: metrics_at(scores, labels, t) for name, t in given.items()}
        out["given_thresholds_source"] = given_source
    return out


def _images(pairs, groups: Sequence[LesionGroup], with_dice: bool, with_froc: bool, froc_rule: HitRule,
            dice_thresholds: Sequence[float], progress: ProgressCallback
            ) -> tuple[Optional[dict[str, Any]], dict[int, list[CaseHits]]]:
    """DSC and FROC hits, reading each case's lesion mask once (and dropping it after)."""
    per_patient: dict[str, dict[str, Optional[float]]] = {}
    without_map: list[str] = []
    hits: dict[str, list[CaseHits]] = {g.name: [] for g in groups}
    n_masks = 0
    for i, (gt, det) in enumerate(pairs):
        progress(i / max(len(pairs), 1), f"masks and maps of {gt.case_id}")
        mask = read_image_file(gt.lesion_mask, f"lesion mask of case {gt.case_id!r}", label=True) if gt.lesion_mask else None
        n_masks += mask is not None
        if with_dice and mask is not None:
            if det is None or det.probability_map is None:
                without_map.append(gt.case_id)
            else:
                prob = read_image_file(det.probability_map, f"probability map of case {gt.case_id!r}")
                try:
                    per_patient[gt.case_id] = case_dice(prob, mask, dice_thresholds)
                except CaseError as exc:
                    raise CaseError(f"{det.probability_map} (case {gt.case_id!r}): {exc}") from None
        if with_froc:
            regions = LesionRegions(mask) if mask is not None else None
            for g in groups:
                hits[g.name].append(case_hits(gt, det.detections if det else [], None, g.k, froc_rule, regions,
                                              group=g))
    if not with_dice or n_masks == 0:
        return None, hits
    summary = dice_summary(per_patient, dice_thresholds)
    summary["cases_with_mask_but_no_probability_map"] = without_map
    summary["note"] = ("Lesions of any GGG (benign included) against the map binarised at each threshold; "
                       "patients with empty mask and empty map have no DSC and are left out of the mean.")
    return summary, hits


def evaluate(detections: DetectionSet, ground_truth: GroundTruthSet, criteria: Sequence[int] = (1, 2, 3),
             distance_mm: float = DEFAULT_DISTANCE_MM, k_match: float = DEFAULT_K_MATCH,
             given_thresholds: Optional[dict[str, dict[str, float]]] = None, thresholds_source: Optional[str] = None,
             bootstrap: int = 1000, seed: int = 0, missing_cases: str = "error",
             with_froc: bool = False, froc_rule: HitRule = HitRule(), fp_rates: Sequence[float] = FP_RATES,
             froc_protocol: str = "default", with_dice: bool = True, dice_thresholds: Sequence[float] = DICE_THRESHOLDS,
             progress: Optional[ProgressCallback] = None) -> dict[str, Any]:
    """All metrics of one detections set against one ground truth, as a JSON-ready dict.

    Keys: format, settings, model, cases, "GGG>=k" per criterion -> {"lesion", "patient"},
    dice (None without masks), froc (only when asked), scores (per-lesion/per-patient
    scores and matches, for inspection). Raises FormatError/ParameterError/CaseError.

    FROC (`with_froc`): with froc_protocol "default", one curve per criterion GGG>=k under
    `froc_rule` plus the index lesion's (detections of predicted GGG >= 1); with "focalnet",
    the paper's protocol and groups (`focalnet_protocol`, which fixes the rule; it implies
    with_froc) and froc_protocol describing it.
    """
    progress = progress or silent
    criteria = sorted(set(int(k) for k in criteria))
    if froc_protocol not in focalnet_protocol.PROTOCOLS:
        raise ParameterError(f"--froc-protocol must be one of {', '.join(focalnet_protocol.PROTOCOLS)}, "
                             f"got {froc_protocol!r}.")
    _check_parameters(criteria, distance_mm, k_match, bootstrap, froc_rule)
    paper_froc = froc_protocol == "focalnet"
    if paper_froc:
        with_froc, froc_rule = True, focalnet_protocol.focalnet_rule(froc_rule.slice_mm)
    groups = (list(focalnet_protocol.GROUPS) if paper_froc
              else [criterion_group(k) for k in criteria] + [INDEX_GROUP])
    pairs, missing = pair_cases(detections, ground_truth, missing_cases)
    patient_ids = [gt.case_id for gt, _ in pairs]
    n_patients = len(pairs)
    counts = resample_counts(n_patients, bootstrap, seed)
    result: dict[str, Any] = {
        "format": METRICS_FORMAT,
        "settings": {"criteria": [criterion_name(k) for k in criteria], "distance_mm": distance_mm, "k_match": k_match,
                     "matching": "candidates strictly closer than distance_mm; max of score + k*(1 - d/distance_mm)",
                     "positive_rule": "score > threshold - 1e-4",
                     "bootstrap": {"n_resamples": int(bootstrap), "seed": int(seed), "unit": "patient",
                                   "level": 0.95, "method": "percentile"},
                     "thresholds_source": thresholds_source, "froc_protocol": froc_protocol},
        "model": detections.model,
        "cases": {"n_evaluated": n_patients, "evaluated": patient_ids, "missing": missing},
        "scores": {},
    }
    steps = len(criteria) + 1
    for i, k in enumerate(criteria):
        key = criterion_name(k)
        progress(i / steps, f"evaluating {key}")
        given = (given_thresholds or {}).get(key)
        lesions, owners = [], []
        for p, (gt, det) in enumerate(pairs):
            for item in lesion_scores(gt, det, k, distance_mm, k_match):
                lesions.append(item)
                owners.append(p)
        patients = [patient_score(gt, det, k) for gt, det in pairs]
        lesion_level = _level(np.array([x.score for x in lesions], dtype=float),
                              np.array([x.positive for x in lesions], dtype=bool),
                              np.array(owners, dtype=np.int64), counts, seed, given, thresholds_source)
        patient_level = _level(np.array([x.score for x in patients], dtype=float),
                               np.array([x.positive for x in patients], dtype=bool),
                               np.arange(n_patients), counts, seed, given, thresholds_source)
        result[key] = {"lesion": lesion_level, "patient": patient_level}
        result["scores"][key] = {"lesion": [vars(x) for x in lesions], "patient": [vars(x) for x in patients]}
    if with_dice or with_froc:
        dice, hits = _images(pairs, groups, with_dice, with_froc, froc_rule, dice_thresholds,
                             sub_progress(progress, len(criteria) / steps, 1.0))
        if with_froc and paper_froc:
            result["froc"] = focalnet_protocol.summarise(hits, froc_rule, fp_rates)
            result["froc_protocol"] = focalnet_protocol.describe()
        elif with_froc:
            result["froc"] = {g.name: froc_from_hits(hits[g.name], froc_rule, fp_rates) for g in groups}
        if with_dice:
            result["dice"] = dice
            if dice is None:
                result["dice_note"] = "No lesion masks in the ground truth; DSC not computed."
    progress(1.0, "evaluation done")
    return result


def thresholds_block(result: dict[str, Any], level: str = "lesion", computed_on: Optional[str] = None
                     ) -> dict[str, dict[str, Any]]:
    """The working points of an evaluation as a model.json `thresholds` block.

    For a-priori thresholds (paper, Supplementary Table 2): evaluate the training or
    validation folds, then store {"GGG>=k": {"max_sensitivity": t, "balanced": t,
    "computed_on": ...}} in the model package; criteria with undefined working points are
    left out. The paper's thresholds are lesion-level ones, hence the default.
    """
    block = {}
    for key in result["settings"]["criteria"]:
        points = result.get(key, {}).get(level, {}).get("working_points") or {}
        if all(points.get(name) is not None for name in ("max_sensitivity", "balanced")):
            entry: dict[str, Any] = {name: points[name]["threshold"] for name in ("max_sensitivity", "balanced")}
            if computed_on:
                entry["computed_on"] = computed_on
            block[key] = entry
    return block
