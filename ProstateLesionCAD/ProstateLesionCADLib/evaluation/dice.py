"""Dice similarity coefficient (DSC) of lesion probability maps against GT lesion masks.

Pellicer-Valero et al. 2022, Results ("Regarding lesion segmentation performance"): the
mean DSC across all patients for segmenting any lesion irrespective of its GGG (benign
GGG0 lesions included), with the probability map binarised at 0.25 and at 0.5.

- The map may live on another grid than the mask (e.g. the detector's 0.5x0.5x3 mm crop):
  it is resampled onto the mask grid with linear interpolation, 0 outside its extent.
- Every non-zero mask label is lesion. A voxel is segmented when p > t - 1e-4 (the same
  rule as the working points: a value equal to the threshold, e.g. an ensemble vote
  fraction of exactly 0.25 stored as float32, counts as segmented).
- A patient with an empty mask and an empty binarised map has no defined DSC (None) and
  is left out of the mean; the count of patients entering each mean is reported.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import CaseError
from .roc import POSITIVE_TOLERANCE

DICE_THRESHOLDS = (0.25, 0.5)


def on_mask_grid(probability: sitk.Image, mask: sitk.Image) -> np.ndarray:
    """The probability map as a float array on the mask's grid (z, y, x)."""
    if probability.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError("a lesion probability map must have one component per voxel.")
    probability = sitk.Cast(probability, sitk.sitkFloat32)
    same_grid = (probability.GetSize() == mask.GetSize()
                 and np.allclose(probability.GetOrigin(), mask.GetOrigin(), atol=1e-4)
                 and np.allclose(probability.GetSpacing(), mask.GetSpacing(), atol=1e-6)
                 and np.allclose(probability.GetDirection(), mask.GetDirection(), atol=1e-6))
    if not same_grid:
        probability = sitk.Resample(probability, mask, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(probability)


def dice(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """2|A and B| / (|A| + |B|); None when both are empty."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return None
    return 2.0 * int(np.sum(a & b)) / total


def case_dice(probability: sitk.Image, mask: sitk.Image,
              thresholds: Sequence[float] = DICE_THRESHOLDS) -> dict[str, Optional[float]]:
    """DSC at each threshold for one patient, keyed by the threshold as text ("0.25")."""
    truth = sitk.GetArrayFromImage(mask) > 0
    p = on_mask_grid(probability, mask)
    if p.size and (float(p.max()) > 1.0 + 1e-6 or float(p.min()) < -1e-6):
        raise CaseError(f"a lesion probability map has values outside [0, 1] (range {float(p.min()):g}..{float(p.max()):g}); "
                        "DSC thresholds 0.25/0.5 need probabilities.")
    return {f"{t:g}": dice(p > t - POSITIVE_TOLERANCE, truth) for t in thresholds}


def dice_summary(per_patient: dict[str, dict[str, Optional[float]]],
                 thresholds: Sequence[float] = DICE_THRESHOLDS) -> dict[str, Any]:
    """Mean DSC per threshold over patients with a defined DSC, and how many they were."""
    mean, n = {}, {}
    for t in thresholds:
        key = f"{t:g}"
        vals = [v[key] for v in per_patient.values() if v.get(key) is not None]
        mean[key] = float(np.mean(vals)) if vals else None
        n[key] = len(vals)
    return {"thresholds": [float(t) for t in thresholds], "mean": mean, "n_patients": n,
            "per_patient": per_patient}
