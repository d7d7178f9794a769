"""Features and scores of the ADC→T2 registration (main paper, Pre-processing,
"Automated sequence registration").

The registration works on the spatial gradient magnitude of both images, so that the
opposite contrasts of T2 and ADC (and their different intensity scales) do not matter.
A candidate transform is scored by

    score = mean(CC_CG, CC_PZ, MI)

where CC_r is the Pearson correlation between the gradient magnitude of T2 and of the
registered ADC inside region r, and MI is the Mattes mutual information (in nats) of the
two gradient images over the working region. The paper picks "the run yielding the
highest value for the average of all metrics and the loss"; SimpleITK reports the Mattes
metric as a *loss* (the negative of the mutual information, lower is better), so we
average its negation, MI = -loss, which makes every term "higher is better". CCs lie in
[-1, 1] and MI in nats is of the same order (0.05-0.5 on these gradient images), so the
plain average is used without extra weights. (The authors' published notebook weights the
PZ and CG correlations 1.5 and 0.75 and adds loss/2; we follow the paper's text.)

The loss term is re-evaluated for every candidate (and for the identity) with the same
deterministic settings (all voxels of the working region, no random sampling), so that
scores are comparable between starts and with the identity.

Regions: the CG and PZ of a zonal mask when both are present; else the whole prostate;
else a central box (the middle half of the working region in-plane, all slices), since
ProstateX acquisitions are centred on the prostate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import SimpleITK as sitk

# Regions with fewer voxels than this give an unreliable correlation and are skipped.
MIN_REGION_VOXELS = 50


def gradient_magnitude(image: sitk.Image, sigma_mm: float) -> sitk.Image:
    """Gradient magnitude after Gaussian smoothing with sigma in mm (float32)."""
    return sitk.GradientMagnitudeRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), sigma=sigma_mm)


def normalise_for_mi(image: sitk.Image, mask: Optional[np.ndarray] = None, upper_percentile: float = 99.0) -> sitk.Image:
    """Clip at a high percentile and scale to [0, 1]: Mattes MI bins the intensity range
    linearly, and a few very strong edges would otherwise squeeze all tissue into one bin."""
    arr = sitk.GetArrayViewFromImage(image)
    values = arr[mask] if mask is not None and mask.any() else arr
    top = float(np.percentile(values, upper_percentile)) if values.size else 0.0
    if top <= 0:
        top = float(arr.max()) or 1.0
    out = sitk.Clamp(image, sitk.sitkFloat32, 0.0, top) / top
    return out


@dataclass
class ScoringRegions:
    """Boolean masks (z, y, x arrays on the fixed working grid) where correlations are taken."""

    names: list[str]
    masks: list[np.ndarray]
    kind: str  # "zones", "prostate" or "central"


def scoring_regions(reference: sitk.Image, zones: Optional[sitk.Image], prostate: Optional[sitk.Image]) -> ScoringRegions:
    """CG/PZ from zones, else the prostate, else a central box, on `reference`'s grid."""

    def on_grid(label_image: sitk.Image) -> np.ndarray:
        resampled = sitk.Resample(label_image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                  sitk.sitkUInt8)
        return sitk.GetArrayFromImage(resampled)

    if zones is not None:
        labels = on_grid(zones)
        cg, pz = labels == 1, labels == 2
        if cg.sum() >= MIN_REGION_VOXELS and pz.sum() >= MIN_REGION_VOXELS:
            return ScoringRegions(["CG", "PZ"], [cg, pz], "zones")
        if (labels > 0).sum() >= MIN_REGION_VOXELS:
            return ScoringRegions(["prostate"], [labels > 0], "prostate")
    if prostate is not None:
        gland = on_grid(prostate) > 0
        if gland.sum() >= MIN_REGION_VOXELS:
            return ScoringRegions(["prostate"], [gland], "prostate")
    size_z, size_y, size_x = reference.GetSize()[::-1]
    box = np.zeros((size_z, size_y, size_x), bool)
    box[:, size_y // 4: size_y - size_y // 4, size_x // 4: size_x - size_x // 4] = True
    return ScoringRegions(["central"], [box], "central")


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0 when either side is constant (nothing to align)."""
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def mattes_loss(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, bins: int,
                fixed_mask: Optional[sitk.Image] = None) -> float:
    """Mattes MI loss (SimpleITK sign: -MI) of `transform`, over every fixed voxel."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    method.SetInitialTransform(sitk.Transform(transform), inPlace=False)
    return float(method.MetricEvaluate(fixed, moving))


@dataclass
class Score:
    """How well one candidate transform aligns ADC to T2 (higher `total` is better)."""

    total: float
    correlations: dict[str, float] = field(default_factory=dict)
    mutual_information: float = 0.0  # nats, = -Mattes loss

    def as_dict(self) -> dict:
        return {"total": round(self.total, 6),
                "correlations": {k: round(v, 6) for k, v in self.correlations.items()},
                "mutual_information": round(self.mutual_information, 6)}


def score_transform(transform: sitk.Transform, *, fixed_features: sitk.Image, fixed_features_mi: sitk.Image,
                    moving_image: sitk.Image, moving_features_mi: sitk.Image, regions: ScoringRegions,
                    sigma_mm: float, bins: int) -> Score:
    """Paper's selection score of one candidate: mean of the regional gradient correlations
    and the mutual information (see module docstring)."""
    registered = sitk.Resample(moving_image, fixed_features, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    registered_features = sitk.GetArrayFromImage(gradient_magnitude(registered, sigma_mm))
    fixed_arr = sitk.GetArrayViewFromImage(fixed_features)
    ccs = {name: correlation(fixed_arr[mask], registered_features[mask])
           for name, mask in zip(regions.names, regions.masks)}
    mi = -mattes_loss(fixed_features_mi, moving_features_mi, transform, bins)
    total = float(np.mean(list(ccs.values()) + [mi]))
    return Score(total=total, correlations=ccs, mutual_information=mi)
