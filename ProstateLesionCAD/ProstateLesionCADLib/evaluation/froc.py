"""Free-response ROC (FROC): lesion detection sensitivity vs false positives per patient.

Cao et al. 2019 (FocalNet), Sec. II-E3: "True positive detections are localized points in
or within 5 mm of lesion ROIs ... False positive detections are localized points that are
not true positive detections ... a localized point must be in the same slice of an ROI to
be considered as a true detection." Sensitivity = detected lesions / all lesions of the
group; the trade-off is swept by thresholding the detection scores.

Hit rule (`HitRule`), for criterion GGG>=k (lesions with GGG >= k; detections with
predicted GGG >= k):
- with a lesion mask and the lesion's `label`: the detection centre is within `distance_mm`
  of a voxel centre of that lesion's ROI (or inside one of its voxels); with `same_slice`,
  only ROI voxels in the detection's slice of the mask grid count;
- otherwise (no mask, no label, or the label absent from the mask): the detection centre
  is within `distance_mm` of the lesion centre; with `same_slice`, additionally
  |z_det - z_lesion| < slice_mm / 2 (LPS z, axial slices).
A detection hitting at least one counted lesion is a true positive (several hits on one
lesion are not false positives); every other kept detection is a false positive,
including one on a lesion of lower GGG than the criterion (the paper's literal rule).
Options for FocalNet's per-group analysis: `ignore_other_lesions` leaves a detection that
only hits lesions outside the group out (neither TP nor FP), `all_detections` uses
every detection whatever its predicted GGG (pure localisation) and `annotated_slices_only`
keeps only detections in a slice holding a ground-truth ROI (FocalNet is evaluated on the
annotated slices only, Sec. II-E1); `focalnet_protocol.py` sets all of them at once.
Which lesions a FROC counts is a `LesionGroup`: the lesions of criterion GGG>=k (the
default), a GGG range (the paper's per-GS groups) or each patient's index lesion
(`index_lesion`: Cao et al. Sec. II-B, "the lesion with the highest GS or the largest diameter
when multiple lesions had the same grade").
Decision rule for keeping a detection: score > threshold - 1e-4, as everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..formats import Detection, GroundTruthCase, Lesion
from ..ggg_palette import criterion_name
from .lesion_matching import criterion_detections
from .roc import POSITIVE_TOLERANCE

FP_RATES = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class HitRule:
    """When a detection is a true or a false positive (see the module docstring)."""
    distance_mm: float = 5.0
    same_slice: bool = False
    slice_mm: float = 3.0  # slice thickness for the same-slice test without a mask
    all_detections: bool = False  # True: ignore predicted GGG (pure localisation, FocalNet's detection FROC)
    ignore_other_lesions: bool = False  # True: a hit on a lesion outside the group is neither TP nor FP
    annotated_slices_only: bool = False  # True: only detections in a slice holding a lesion ROI exist

    def describe(self) -> str:
        text = f"within {self.distance_mm:g} mm of the lesion"
        text += " and in the same slice" if self.same_slice else ""
        text += "; detections on annotated slices only" if self.annotated_slices_only else ""
        text += "; all detections regardless of predicted GGG" if self.all_detections else ""
        return text + ("; hits on lesions outside the criterion ignored" if self.ignore_other_lesions else "")


class LesionRegions:
    """Voxel centres (LPS mm) of each labelled lesion of one mask, and their slice index."""

    def __init__(self, mask: sitk.Image):
        self.mask = mask
        self.array = sitk.GetArrayFromImage(mask)  # (z, y, x)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._annotated = self.array.reshape(self.array.shape[0], -1).any(axis=1)  # per slice

    def voxels(self, label: int) -> tuple[np.ndarray, np.ndarray]:
        if label not in self._cache:
            zyx = np.argwhere(self.array == label)
            ijk = zyx[:, ::-1].astype(float)
            direction = np.array(self.mask.GetDirection()).reshape(3, 3)
            spacing = np.array(self.mask.GetSpacing())
            points = np.array(self.mask.GetOrigin()) + (ijk * spacing) @ direction.T
            self._cache[label] = (points, zyx[:, 0])
        return self._cache[label]

    def slice_of(self, point: Sequence[float]) -> int:
        return int(round(self.mask.TransformPhysicalPointToContinuousIndex(tuple(map(float, point)))[2]))

    def annotated(self, point: Sequence[float]) -> bool:
        """Whether the point's slice of the mask grid holds any lesion voxel."""
        z = self.slice_of(point)
        return 0 <= z < self.array.shape[0] and bool(self._annotated[z])

    def largest_diameter(self, label: int) -> Optional[float]:
        """Longest in-plane diameter (mm, between voxel centres) of the lesion over its slices:
        the annotations the paper ranks by are 2D ROIs on T2 slices. None without voxels."""
        zyx = np.argwhere(self.array == label)
        if zyx.shape[0] == 0:
            return None
        spacing = np.array(self.mask.GetSpacing())[:2][::-1]  # (y, x)
        best = 0.0
        for z in np.unique(zyx[:, 0]):
            best = max(best, _diameter(zyx[zyx[:, 0] == z, 1:] * spacing))
        return best


def _diameter(points: np.ndarray) -> float:
    """Largest distance between 2D points (on their convex hull when there are many)."""
    if points.shape[0] < 2:
        return 0.0
    if points.shape[0] > 64:
        from scipy.spatial import ConvexHull, QhullError
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # collinear: the extreme points along the line hold the diameter
            points = points[[np.argmin(points @ (points[-1] - points[0])), np.argmax(points @ (points[-1] - points[0]))]]
    from scipy.spatial.distance import pdist

    return float(pdist(points).max())


def index_lesion(gt_case: GroundTruthCase, regions: Optional[LesionRegions] = None) -> Optional[Lesion]:
    """The patient's index lesion (Cao et al. 2019, Sec. II-B): the cancer (GGG >= 1) lesion of the
    highest grade; among several of that grade the one of the largest in-plane diameter (lesion
    mask needed; without it, or on equal diameters, the first in the file). None without cancer."""
    cancers = [lesion for lesion in gt_case.lesions if lesion.ggg >= 1]
    if not cancers:
        return None
    top = [lesion for lesion in cancers if lesion.ggg == max(l.ggg for l in cancers)]
    if len(top) == 1 or regions is None:
        return top[0]
    sizes = [(regions.largest_diameter(l.label) if l.label is not None else None) or 0.0 for l in top]
    return top[int(np.argmax(sizes))]  # argmax: the first of equal diameters


@dataclass(frozen=True)
class LesionGroup:
    """The lesions one FROC counts, and the detections that exist for it.

    Counted: each patient's index lesion (`index`), else the lesions with lo <= GGG <= hi.
    `k`: without `HitRule.all_detections`, only detections of predicted GGG >= k exist.
    `others`: the lesions whose hits `ignore_other_lesions` leaves out, "all" the uncounted
    ones, "cancer" only uncounted GGG >= 1 lesions (the paper annotates cancer only, so a
    detection on a benign finding stays a false positive)."""
    name: str
    k: int
    lo: int = 0
    hi: int = 3
    index: bool = False
    others: str = "all"

    def split(self, gt_case: GroundTruthCase, regions: Optional[LesionRegions]) -> tuple[list[Lesion], list[Lesion]]:
        if self.index:
            chosen = index_lesion(gt_case, regions)
            counted = [chosen] if chosen is not None else []
        else:
            counted = [lesion for lesion in gt_case.lesions if self.lo <= lesion.ggg <= self.hi]
        pool = gt_case.lesions if self.others == "all" else [lesion for lesion in gt_case.lesions if lesion.ggg >= 1]
        return counted, [lesion for lesion in pool if not any(lesion is c for c in counted)]


def criterion_group(k: int) -> LesionGroup:
    """The lesions of criterion GGG>=k (the default FROC); uncounted lesions are the others."""
    return LesionGroup(criterion_name(k), k, lo=k)


INDEX_GROUP = LesionGroup("index lesion", 1, index=True)


def is_hit(det: Detection, lesion: Lesion, rule: HitRule, regions: Optional[LesionRegions]) -> bool:
    if regions is not None and lesion.label is not None and regions.voxels(lesion.label)[0].shape[0]:
        points, slices = regions.voxels(lesion.label)
        if rule.same_slice:
            points = points[slices == regions.slice_of(det.center_lps)]
        if points.shape[0] == 0:  # the ROI does not reach the detection's slice
            return False
        nearest = float(np.min(np.linalg.norm(points - np.asarray(det.center_lps), axis=1)))
        return nearest <= rule.distance_mm or _inside(det, lesion, regions)
    if math.dist(det.center_lps, lesion.center_lps) > rule.distance_mm:
        return False
    return not rule.same_slice or abs(det.center_lps[2] - lesion.center_lps[2]) < rule.slice_mm / 2.0


def _inside(det: Detection, lesion: Lesion, regions: LesionRegions) -> bool:
    idx = regions.mask.TransformPhysicalPointToIndex(tuple(map(float, det.center_lps)))
    size = regions.mask.GetSize()
    return all(0 <= i < n for i, n in zip(idx, size)) and regions.array[idx[2], idx[1], idx[0]] == lesion.label


@dataclass
class CaseHits:
    """One case under one criterion: kept detections' scores and the counted lesions each hits."""
    scores: list[float]
    hits: list[list[int]]  # per detection: indices (within the case) of the counted lesions it hits
    n_lesions: int
    used_mask: bool
    ignored: int  # detections left out by ignore_other_lesions
    off_annotated_slices: int = 0  # detections left out by annotated_slices_only


def on_annotated_slice(det: Detection, gt_case: GroundTruthCase, rule: HitRule,
                       regions: Optional[LesionRegions]) -> bool:
    """Whether the detection lies in a slice holding a ground-truth ROI (any lesion): the mask's
    slice; without a mask, within half a slice (slice_mm) of a lesion centre along LPS z."""
    if regions is not None:
        return regions.annotated(det.center_lps)
    return any(abs(det.center_lps[2] - lesion.center_lps[2]) < rule.slice_mm / 2.0 for lesion in gt_case.lesions)


def case_hits(gt_case: GroundTruthCase, detections: Sequence[Detection], mask: Optional[sitk.Image], k: int,
              rule: HitRule = HitRule(), regions: Optional[LesionRegions] = None,
              group: Optional[LesionGroup] = None) -> CaseHits:
    """Apply the hit rule to one case (pass `regions` to reuse one mask across criteria);
    `group` (default: criterion GGG>=k) says which lesions count."""
    if regions is None and mask is not None:
        regions = LesionRegions(mask)
    group = group or criterion_group(k)
    lesions, others = group.split(gt_case, regions)
    out = CaseHits([], [], len(lesions), regions is not None and any(l.label is not None for l in lesions), 0)
    for det in (detections if rule.all_detections else criterion_detections(detections, group.k)):
        if rule.annotated_slices_only and not on_annotated_slice(det, gt_case, rule, regions):
            out.off_annotated_slices += 1
            continue
        found = [j for j, lesion in enumerate(lesions) if is_hit(det, lesion, rule, regions)]
        if not found and rule.ignore_other_lesions and any(is_hit(det, o, rule, regions) for o in others):
            out.ignored += 1
            continue
        out.scores.append(float(det.score))
        out.hits.append(found)
    return out


def froc(cases: Sequence[tuple[GroundTruthCase, Sequence[Detection], Optional[sitk.Image]]], k: int,
         rule: HitRule = HitRule(), fp_rates: Sequence[float] = FP_RATES,
         group: Optional[LesionGroup] = None) -> dict[str, Any]:
    """FROC of criterion GGG>=k (or of `group`) over (gt_case, detections, lesion mask or None) triples."""
    return froc_from_hits([case_hits(gt, dets, mask, k, rule, group=group) for gt, dets, mask in cases],
                          rule, fp_rates)


def froc_from_hits(per_case: Sequence[CaseHits], rule: HitRule = HitRule(),
                   fp_rates: Sequence[float] = FP_RATES) -> dict[str, Any]:
    """FROC curve and sensitivity at the given false-positive rates from per-case hits."""
    scores: list[float] = []
    hits: list[list[int]] = []  # per kept detection: global indices of the lesions it hits
    n_lesions = 0
    for case in per_case:
        scores.extend(case.scores)
        hits.extend([n_lesions + j for j in found] for found in case.hits)
        n_lesions += case.n_lesions
    masks_used = sum(case.used_mask for case in per_case)
    ignored = sum(case.ignored for case in per_case)
    off_slices = sum(case.off_annotated_slices for case in per_case)
    n_patients = len(per_case)
    result: dict[str, Any] = {"hit_rule": {"distance_mm": rule.distance_mm, "same_slice": rule.same_slice,
                                           "slice_mm": rule.slice_mm, "description": rule.describe(),
                                           "all_detections": rule.all_detections,
                                           "ignore_other_lesions": rule.ignore_other_lesions,
                                           "cases_using_lesion_masks": masks_used},
                              "n_patients": n_patients, "n_lesions": n_lesions, "n_detections": len(scores),
                              "n_detections_ignored": ignored}
    if rule.annotated_slices_only:
        result["hit_rule"]["annotated_slices_only"] = True
        result["n_detections_off_annotated_slices"] = off_slices
    if n_lesions == 0 or n_patients == 0:
        result.update(points=[], sensitivity_at_fp={f"{r:g}": None for r in fp_rates},
                      note="FROC undefined: no lesions for this criterion.")
        return result
    s = np.asarray(scores)
    order = np.argsort(-s, kind="stable")
    points = [{"threshold": None, "fp_per_patient": 0.0, "sensitivity": 0.0}]
    detected: set[int] = set()
    fp = 0
    j = 0
    # lowering the threshold only adds detections: sweep once, in decreasing score order
    for t in np.unique(s)[::-1]:
        while j < order.size and s[order[j]] > t - POSITIVE_TOLERANCE:
            if hits[order[j]]:
                detected.update(hits[order[j]])
            else:
                fp += 1
            j += 1
        points.append({"threshold": float(t), "fp_per_patient": fp / n_patients,
                       "sensitivity": len(detected) / n_lesions})
    result["points"] = points
    result["sensitivity_at_fp"] = {f"{r:g}": max(p["sensitivity"] for p in points if p["fp_per_patient"] <= r + 1e-12)
                                   for r in fp_rates}
    return result


def fp_at_sensitivity(points: Sequence[dict[str, Any]], sensitivities: Sequence[float]) -> dict[str, Optional[float]]:
    """Fewest false positives per patient reaching each sensitivity (the paper's "FP@Sen80%",
    Tables II-III); None when the curve never reaches it."""
    out: dict[str, Optional[float]] = {}
    for level in sensitivities:
        reached = [p["fp_per_patient"] for p in points if p["sensitivity"] >= level - 1e-12]
        out[f"{level:g}"] = min(reached) if reached else None
    return out
