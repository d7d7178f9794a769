"""FocalNet pre-processing (Cao et al. 2019, Sec. II-D1 and II-D2).

- Registration: ADC is mapped to T2 through the scanner coordinates (rigid, no non-rigid
  step, as the paper); a transform (e.g. from `prostate-cad register`) can be passed instead.
- Region: an 80 mm x 80 mm in-plane square centred on the prostate (the paper picks it by
  hand; we use the centroid of the prostate mask, or the T2 image centre without a mask),
  resized to `size` x `size` pixels (paper: 128; the CPU demo uses 64), one 2D sample per T2
  slice. T2 is smoothed before down-sampling (no aliasing); both images use linear interpolation.
- T2 intensity: clipped between the intensity of air (lower) and of the bladder (upper) and
  scaled linearly to [0, 1]. The bladder is found programmatically: the largest connected
  region (>= 2 cm^3) of the brightest 1 % of the smoothed T2 volume; its median intensity is
  the upper threshold. Fallback when no such region exists (bladder outside the field of
  view): the 99.5th percentile of T2 (reported in `t2_upper_source`). Air: the 0.5th
  percentile of T2 (background and rectal gas).
- ADC intensity: clipped by patient-independent thresholds, [0, 3000] x 1e-6 mm^2/s (the paper
  does not give its values), scaled to [0, 1].
- Training-time intensity variation: the T2 upper threshold is scaled by a factor drawn from
  [0.85, 1.20] ("-15 % to +20 %"); see `training.py`, which also does the shift / scale /
  flip augmentation (no rotation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ...errors import CaseError
from ...orientation import canonical_case, to_canonical
from . import ordinal

FOV_MM = 80.0
ADC_RANGE = (0.0, 3000.0)
T2_UPPER_JITTER = (0.85, 1.20)
BLADDER_PERCENTILE = 99.0
BLADDER_MIN_ML = 2.0
AIR_PERCENTILE = 0.5
FALLBACK_PERCENTILE = 99.5


@dataclass
class T2Thresholds:
    lower: float  # air
    upper: float  # bladder
    upper_source: str  # "bladder" or "fallback: 99.5th percentile"
    bladder_ml: float = 0.0


@dataclass
class SliceStack:
    """One case as FocalNet sees it: raw resampled T2 / ADC slices on the crop grid."""

    case_id: str
    grid: sitk.Image  # (size, size, n_slices) reference grid: T2 slices, 80 mm in-plane square
    t2: np.ndarray  # (z, y, x) float32, T2 intensities (not yet normalised)
    adc: np.ndarray  # (z, y, x) float32, ADC in 1e-6 mm^2/s; zeros when the case has no ADC
    thresholds: T2Thresholds
    slices: np.ndarray  # indices of the slices to use (those crossing the prostate; all without a mask)
    classes: Optional[np.ndarray] = None  # (z, y, x) uint8 FocalNet classes 0..5 (training)
    lesion_ids: Optional[np.ndarray] = None  # (z, y, x) lesion labels on the grid (evaluation)
    prostate: Optional[np.ndarray] = None  # (z, y, x) uint8 prostate mask on the grid, when known

    def inputs(self, upper_scale: float = 1.0, slices: Optional[Sequence[int]] = None) -> np.ndarray:
        """(n, 2, y, x) float32 [T2, ADC] in [0, 1] for the chosen slices (default: `self.slices`)."""
        idx = self.slices if slices is None else np.asarray(slices)
        return np.stack([normalise_t2(self.t2[idx], self.thresholds, upper_scale),
                         normalise_adc(self.adc[idx])], axis=1).astype(np.float32)

    def targets(self, slices: Optional[Sequence[int]] = None) -> np.ndarray:
        """(n, 5, y, x) uint8 ordinal targets."""
        if self.classes is None:
            raise CaseError(f"Case {self.case_id}: no lesion labels to build training targets from.")
        idx = self.slices if slices is None else np.asarray(slices)
        return np.moveaxis(ordinal.encode(self.classes[idx]), 0, 1)


def normalise_t2(t2: np.ndarray, thresholds: T2Thresholds, upper_scale: float = 1.0) -> np.ndarray:
    upper = thresholds.upper * upper_scale
    span = max(upper - thresholds.lower, 1e-6)
    return np.clip((t2 - thresholds.lower) / span, 0.0, 1.0)


def normalise_adc(adc: np.ndarray) -> np.ndarray:
    return np.clip((adc - ADC_RANGE[0]) / (ADC_RANGE[1] - ADC_RANGE[0]), 0.0, 1.0)


def t2_thresholds(t2: sitk.Image) -> T2Thresholds:
    """Air and bladder intensities of a T2 volume (see the module docstring for the rule)."""
    values = sitk.GetArrayViewFromImage(t2).astype(np.float32)
    lower = float(np.percentile(values, AIR_PERCENTILE))
    smooth = sitk.SmoothingRecursiveGaussian(sitk.Cast(t2, sitk.sitkFloat32), max(t2.GetSpacing()[:2]) * 1.5)
    smooth_arr = sitk.GetArrayViewFromImage(smooth)
    bright = sitk.GetImageFromArray((smooth_arr >= np.percentile(smooth_arr, BLADDER_PERCENTILE)).astype(np.uint8))
    bright.CopyInformation(t2)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(bright), sortByObjectSize=True)
    labels = sitk.GetArrayViewFromImage(components)
    voxel_ml = float(np.prod(t2.GetSpacing())) / 1000.0
    largest = labels == 1
    ml = float(largest.sum()) * voxel_ml
    if ml >= BLADDER_MIN_ML:
        upper = float(np.median(values[largest]))
        if upper > lower:
            return T2Thresholds(lower, upper, "bladder", round(ml, 2))
    return T2Thresholds(lower, float(np.percentile(values, FALLBACK_PERCENTILE)),
                        f"fallback: {FALLBACK_PERCENTILE:g}th percentile (no bladder region of {BLADDER_MIN_ML:g} ml)")


def crop_grid(t2: sitk.Image, prostate: Optional[sitk.Image], size: int, fov_mm: float = FOV_MM) -> sitk.Image:
    """The FocalNet grid: T2's slices and orientation, a fov_mm square centred on the prostate."""
    if prostate is not None and np.any(sitk.GetArrayViewFromImage(prostate)):
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(sitk.Cast(prostate > 0, sitk.sitkUInt8))
        centre = stats.GetCentroid(1)
    else:
        centre = t2.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in t2.GetSize()])
    ic, jc, _ = t2.TransformPhysicalPointToContinuousIndex(centre)
    spacing = fov_mm / size
    sx, sy, sz = t2.GetSpacing()
    corner = (ic - (size - 1) / 2.0 * spacing / sx, jc - (size - 1) / 2.0 * spacing / sy, 0.0)
    grid = sitk.Image(size, size, t2.GetSize()[2], sitk.sitkUInt8)
    grid.SetSpacing((spacing, spacing, sz))
    grid.SetDirection(t2.GetDirection())
    grid.SetOrigin(t2.TransformContinuousIndexToPhysicalPoint(corner))
    return grid


def _resample(image: sitk.Image, grid: sitk.Image, interpolator=sitk.sitkLinear,
              transform: Optional[sitk.Transform] = None, pixel=sitk.sitkFloat32) -> np.ndarray:
    out = sitk.Resample(image, grid, transform or sitk.Transform(), interpolator, 0.0, pixel)
    return sitk.GetArrayFromImage(out)


def _smoothed_for(image: sitk.Image, grid: sitk.Image) -> sitk.Image:
    """Gaussian anti-aliasing in-plane before down-sampling to the grid spacing."""
    factor = grid.GetSpacing()[0] / image.GetSpacing()[0]
    if factor <= 1.0:
        return sitk.Cast(image, sitk.sitkFloat32)
    sigma = 0.5 * grid.GetSpacing()[0] * np.sqrt(1.0 - 1.0 / factor ** 2)
    return sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), [sigma, sigma, 1e-3])


def prepare_case(case, size: int = 64, fov_mm: float = FOV_MM, prostate: Optional[sitk.Image] = None,
                 transform: Optional[sitk.Transform] = None, lesion_mask: Optional[sitk.Image] = None,
                 lesion_ggg: Optional[dict[int, int]] = None) -> SliceStack:
    """Resample a loaded `Case` to the FocalNet grid. `transform`: T2 point -> ADC point.

    For training pass the lesion label map (label = lesion id) and each lesion's GGG: the
    target classes follow `ordinal.ggg_to_class` (GGG0 benign lesions are non-lesion)."""
    if case.t2 is None:
        raise CaseError(f"Case {case.case_id} has no T2 series; FocalNet needs T2 and ADC.")
    # training and inference see the same voxel order, whatever the files' order
    case, lesion_mask = canonical_case(case), to_canonical(lesion_mask)
    prostate = to_canonical(prostate) if prostate is not None else case.prostate
    grid = crop_grid(case.t2, prostate, size, fov_mm)
    thresholds = t2_thresholds(case.t2)
    t2 = _resample(_smoothed_for(case.t2, grid), grid)
    if case.adc is not None:
        adc = _resample(case.adc, grid, transform=transform)
    else:
        adc = np.zeros_like(t2)
    slices = np.arange(t2.shape[0])
    p = None
    if prostate is not None:
        p = _resample(prostate, grid, sitk.sitkNearestNeighbor, pixel=sitk.sitkUInt8)
        crossing = np.flatnonzero(p.reshape(p.shape[0], -1).any(axis=1))
        if crossing.size:
            slices = crossing
    classes = ids = None
    if lesion_mask is not None:
        ids = _resample(lesion_mask, grid, sitk.sitkNearestNeighbor, pixel=sitk.sitkUInt8)
        classes = np.zeros_like(ids)
        for lid, ggg in (lesion_ggg or {}).items():
            classes[ids == lid] = ordinal.ggg_to_class(ggg)
    return SliceStack(case.case_id, grid, t2, adc, thresholds, slices, classes, ids, p)
