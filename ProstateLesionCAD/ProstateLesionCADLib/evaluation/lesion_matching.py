"""Lesion- and patient-level scores for one significance criterion GGG>=k.

Pellicer-Valero et al. 2022, Methods, "Lesion matching and evaluation":
- only detections whose predicted GGG >= k exist for criterion k; the rest are ignored;
- each ground-truth (GT) lesion is matched to at most one detection: candidates are the
  detections whose centre lies *strictly* closer than 15 mm to the lesion centre (world
  coordinates, mm); the chosen one maximises  score + k_match * (1 - d / 15 mm)  with
  k_match = 2; the lesion's score is the chosen detection's score, 0 without candidates.
  Detections that match no lesion are not penalised at this level;
- the patient's score is the highest score of its (criterion-filtered) detections, 0 when
  there are none; the patient is positive when the highest GGG among its GT lesions and its
  `patient_ggg` (e.g. systematic biopsy), when given, is >= k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from ..formats import Detection, DetectionCase, GroundTruthCase
from ..ggg_palette import meets_criterion

DEFAULT_DISTANCE_MM = 15.0
DEFAULT_K_MATCH = 2.0


@dataclass(frozen=True)
class LesionScore:
    """One GT lesion under one criterion: its label, score and the detection it matched."""
    case_id: str
    lesion_id: int
    ggg: int
    positive: bool
    score: float
    detection_id: Optional[int]  # None: no candidate within the matching distance
    distance_mm: Optional[float]


@dataclass(frozen=True)
class PatientScore:
    case_id: str
    ggg: int  # highest GGG of the lesions and patient_ggg (0 when none)
    positive: bool
    score: float
    detection_id: Optional[int]


def criterion_detections(detections: Sequence[Detection], k: int) -> list[Detection]:
    """Detections that exist for criterion GGG>=k (predicted GGG >= k)."""
    return [d for d in detections if meets_criterion(d.ggg, k)]


def match_lesion(center_lps: Sequence[float], detections: Sequence[Detection],
                 distance_mm: float = DEFAULT_DISTANCE_MM,
                 k_match: float = DEFAULT_K_MATCH) -> tuple[Optional[Detection], Optional[float]]:
    """The detection matched to a lesion centre, and its distance; (None, None) without candidates.

    Candidates lie strictly closer than `distance_mm`; a candidate at exactly `distance_mm`
    is not one. Among candidates the matching score  score + k_match * (1 - d / distance_mm)
    decides, so a nearer detection can win over a farther one with a higher score. Exact
    ties keep the earlier detection in file order (deterministic).
    """
    best: Optional[Detection] = None
    best_d: Optional[float] = None
    best_value = -math.inf
    for det in detections:
        d = math.dist(center_lps, det.center_lps)
        if not d < distance_mm:
            continue
        value = det.score + k_match * (1.0 - d / distance_mm)
        if value > best_value:
            best, best_d, best_value = det, d, value
    return best, best_d


def lesion_scores(gt_case: GroundTruthCase, det_case: Optional[DetectionCase], k: int,
                  distance_mm: float = DEFAULT_DISTANCE_MM,
                  k_match: float = DEFAULT_K_MATCH) -> list[LesionScore]:
    """Score every GT lesion of one case under criterion GGG>=k (det_case None = no detections)."""
    dets = criterion_detections(det_case.detections if det_case else [], k)
    out = []
    for lesion in gt_case.lesions:
        det, d = match_lesion(lesion.center_lps, dets, distance_mm, k_match)
        out.append(LesionScore(gt_case.case_id, lesion.id, lesion.ggg, meets_criterion(lesion.ggg, k),
                               float(det.score) if det else 0.0, det.id if det else None, d))
    return out


def patient_ggg(gt_case: GroundTruthCase) -> int:
    """Highest GGG among the case's GT lesions and its patient_ggg (0 when neither exists)."""
    values = [lesion.ggg for lesion in gt_case.lesions]
    if gt_case.patient_ggg is not None:
        values.append(gt_case.patient_ggg)
    return max(values, default=0)


def patient_score(gt_case: GroundTruthCase, det_case: Optional[DetectionCase], k: int) -> PatientScore:
    """Patient-level score and label under criterion GGG>=k."""
    dets = criterion_detections(det_case.detections if det_case else [], k)
    top = max(dets, key=lambda d: d.score, default=None)
    ggg = patient_ggg(gt_case)
    return PatientScore(gt_case.case_id, ggg, meets_criterion(ggg, k), float(top.score) if top else 0.0,
                        top.id if top else None)
