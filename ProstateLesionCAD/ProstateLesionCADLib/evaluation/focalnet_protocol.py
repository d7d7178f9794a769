"""FocalNet's evaluation protocol (Cao et al. 2019, Sec. II-E, Figs. 5-6, Tables II-III),
`prostate-cad evaluate --froc-protocol focalnet`.

- Slices: "only annotated slices are included" (Sec. II-E1): FocalNet is applied to the
  slices that hold a lesion ROI, so a detection elsewhere does not exist for the evaluation.
- Localisation: detections are the 2D local maxima of the detection output, whatever the
  Gleason score predicted there (Sec. II-E2; `HitRule.all_detections`).
- Hit: "localized points in or within 5 mm of lesion ROIs", and "a localized point must be
  in the same slice of an ROI" (Sec. II-E3): distance to the lesion's ROI voxels in the
  detection's slice of the lesion mask (to its centre, within half a slice, without a mask).
- Groups (Figs. 5-6): index lesions (Sec. II-B: the highest GS, then the largest diameter),
  clinically significant lesions (GS >= 7 = GGG >= 2), all lesions (GGG >= 1; the paper
  annotates cancer only, so GGG0 findings are no lesions: a detection on one is a false
  positive) and each GS group. The paper groups GS 4+3 apart from GS >= 8; the project's
  ground truth stops at GGG3+ (ggg_palette), so its last group is GS >= 4+3 (GGG >= 3).
  "Under this setting, lesion detection sensitivity considers only lesions in a specific GS
  group": a detection hitting only another group's lesion is neither a true nor a false
  positive (`ignore_other_lesions`). The paper does not spell this out; its Table III needs
  it (0.07 false positives per patient at 80% sensitivity for GS 4+3, far below the
  all-lesion curve).
- Figures: sensitivity at given false positives per patient and the false positives per
  patient at 60/70/80/90% sensitivity (Tables II-III, "FP@Sen80%"). The paper reports the
  mean and standard deviation over its five validation folds; here the cases given are
  pooled (evaluate each fold's detections separately for the spread).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import SimpleITK as sitk

from ..formats import Detection, GroundTruthCase
from .froc import (FP_RATES, CaseHits, HitRule, LesionGroup, LesionRegions, case_hits, fp_at_sensitivity,
                   froc_from_hits)

PROTOCOLS = ("default", "focalnet")
SOURCE = "Cao et al. 2019 (FocalNet), IEEE TMI, Sec. II-E and Figs. 5-6"
SENSITIVITIES = (0.6, 0.7, 0.8, 0.9)
HIT_MM = 5.0


def focalnet_rule(slice_mm: float = 3.0) -> HitRule:
    """The paper's hit rule; slice_mm only serves cases without a lesion mask."""
    return HitRule(HIT_MM, same_slice=True, slice_mm=slice_mm, all_detections=True, ignore_other_lesions=True,
                   annotated_slices_only=True)


GROUPS = (
    LesionGroup("index lesion", 1, index=True, others="cancer"),
    LesionGroup("clinically significant (GS>=7, GGG>=2)", 2, lo=2, others="cancer"),
    LesionGroup("all lesions (GGG>=1)", 1, lo=1, others="cancer"),
    LesionGroup("GS 3+3 (GGG1)", 1, lo=1, hi=1, others="cancer"),
    LesionGroup("GS 3+4 (GGG2)", 2, lo=2, hi=2, others="cancer"),
    LesionGroup("GS>=4+3 (GGG>=3)", 3, lo=3, hi=3, others="cancer"),
)


def case_group_hits(gt_case: GroundTruthCase, detections: Sequence[Detection], rule: HitRule,
                    regions: Optional[LesionRegions]) -> dict[str, CaseHits]:
    """One case under every group of the protocol (one mask read serves them all)."""
    return {g.name: case_hits(gt_case, detections, None, g.k, rule, regions, group=g) for g in GROUPS}


def summarise(hits: dict[str, list[CaseHits]], rule: HitRule,
              fp_rates: Sequence[float] = FP_RATES) -> dict[str, dict[str, Any]]:
    """Per group: the FROC (froc_from_hits) plus FP per patient at the paper's sensitivities."""
    out = {}
    for group in GROUPS:
        curve = froc_from_hits(hits[group.name], rule, fp_rates)
        curve["fp_at_sensitivity"] = fp_at_sensitivity(curve["points"], SENSITIVITIES) if curve["points"] else \
            {f"{s:g}": None for s in SENSITIVITIES}
        out[group.name] = curve
    return out


def focalnet_froc(cases: Sequence[tuple[GroundTruthCase, Sequence[Detection], Optional[sitk.Image]]],
                  fp_rates: Sequence[float] = FP_RATES, slice_mm: float = 3.0) -> dict[str, dict[str, Any]]:
    """The protocol's FROC of every group over (gt_case, detections, lesion mask or None) triples
    (training code: out-of-fold predictions without files)."""
    rule = focalnet_rule(slice_mm)
    hits: dict[str, list[CaseHits]] = {g.name: [] for g in GROUPS}
    for gt, dets, mask in cases:
        regions = LesionRegions(mask) if mask is not None else None
        for name, case in case_group_hits(gt, dets, rule, regions).items():
            hits[name].append(case)
    return summarise(hits, rule, fp_rates)


def describe() -> dict[str, Any]:
    """What metrics.json says about the protocol."""
    return {"name": "focalnet", "source": SOURCE,
            "slices": "detections only on annotated slices (holding a ground-truth lesion ROI)",
            "hit": f"detection within {HIT_MM:g} mm of the lesion ROI in the same slice, any predicted GGG",
            "groups": [g.name for g in GROUPS],
            "other_groups": "a detection hitting only a lesion of another group is neither TP nor FP; "
                            "GGG0 findings are no lesions (a detection on one is a false positive)",
            "index_lesion": "highest GGG, then the largest in-plane diameter of the lesion mask",
            "deviation": "GS 4+3 and GS>=8 form one group (the ground truth stops at GGG3+); "
                         "cases pooled rather than mean and SD over folds"}
