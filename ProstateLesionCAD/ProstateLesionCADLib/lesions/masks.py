"""Per-detection lesion masks, volumes and zones, for display (Slicer segments) and reports.

A detection (ARCHITECTURE.md detections format) has a centre, usually a box, and the run may
have written a lesion-probability map on the T2 grid (Retina U-Net segmentation head,
main paper "Architecture: Retina U-Net"). Its mask on a reference grid is, in order:

1. inside the box, the voxels whose probability is >= 0.5 (the segmentation head's
   decision threshold);
2. if none reach 0.5 (a low-score detection), the voxels >= half of the maximum
   probability inside the box (half-maximum contour), when that maximum is > 0.05;
3. otherwise, or without a map, the ellipsoid inscribed in the box.

A detection without a box gets a 10 mm cube around its centre (DEFAULT_BOX_MM). Masks
are kept cropped to the box (index offset + array) so many lesions stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..image_files import same_grid
from ..formats import Detection

DEFAULT_BOX_MM = 10.0
PROBABILITY_THRESHOLD = 0.5
MIN_PEAK = 0.05
ZONE_NAMES = {0: "outside", 1: "CG", 2: "PZ"}


@dataclass
class LesionMask:
    """A boolean mask cropped to [lo, lo + shape) of the reference grid (indices i, j, k)."""

    lo: tuple[int, int, int]  # first voxel index (i, j, k) of the crop
    mask: np.ndarray  # bool, array order (k, j, i) like sitk.GetArrayFromImage
    source: str  # "probability>=0.5", "half-maximum", "ellipsoid"

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())


def detection_box(det: Detection) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) LPS corners of the detection's box (a default cube when it has none)."""
    if det.box_lps is not None:
        lo, hi = np.asarray(det.box_lps[0], float), np.asarray(det.box_lps[1], float)
        return np.minimum(lo, hi), np.maximum(lo, hi)
    c = np.asarray(det.center_lps, float)
    return c - DEFAULT_BOX_MM / 2, c + DEFAULT_BOX_MM / 2


def reference_grid(detections: Sequence[Detection], spacing: float = 0.5, margin_mm: float = 5.0) -> sitk.Image:
    """An axis-aligned LPS grid covering every box (used when no image is available)."""
    boxes = [detection_box(d) for d in detections] or [(np.zeros(3), np.zeros(3))]
    lo = np.min([b[0] for b in boxes], axis=0) - margin_mm
    hi = np.max([b[1] for b in boxes], axis=0) + margin_mm
    size = [int(np.ceil(v)) + 1 for v in (hi - lo) / spacing]
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing([spacing] * 3)
    grid.SetOrigin(tuple(lo))
    return grid


def _index_range(reference: sitk.Image, lo: np.ndarray, hi: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
    corners = [(x, y, z) for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    idx = np.array([reference.TransformPhysicalPointToContinuousIndex(tuple(map(float, c))) for c in corners])
    first = np.maximum(np.floor(idx.min(axis=0) + 0.5).astype(int), 0)
    last = np.minimum(np.floor(idx.max(axis=0) + 0.5).astype(int), np.array(reference.GetSize()) - 1)
    if np.any(last < first):
        return None
    return first, last


def _physical_points(reference: sitk.Image, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """LPS coordinates of the voxel centres in the index range, shaped (k, j, i, 3)."""
    k, j, i = np.meshgrid(*(np.arange(first[a], last[a] + 1) for a in (2, 1, 0)), indexing="ij")
    index = np.stack([i, j, k], axis=-1).astype(float)
    matrix = np.asarray(reference.GetDirection(), float).reshape(3, 3) @ np.diag(reference.GetSpacing())
    return index @ matrix.T + np.asarray(reference.GetOrigin(), float)


def detection_mask(det: Detection, reference: sitk.Image,
                   probability: Optional[np.ndarray] = None) -> Optional[LesionMask]:
    """The lesion mask of one detection on `reference` (None when its box is outside the grid).

    `probability` is the probability map as an array on the reference grid (k, j, i).
    """
    lo_mm, hi_mm = detection_box(det)
    found = _index_range(reference, lo_mm, hi_mm)
    if found is None:
        return None
    first, last = found
    points = _physical_points(reference, first, last)
    center, half = (lo_mm + hi_mm) / 2, np.maximum((hi_mm - lo_mm) / 2, 1e-6)
    inside_box = np.all(np.abs(points - center) <= half + 1e-6, axis=-1)
    if probability is not None:
        crop = probability[first[2]:last[2] + 1, first[1]:last[1] + 1, first[0]:last[0] + 1]
        in_box = np.where(inside_box, crop, 0.0)
        mask = in_box >= PROBABILITY_THRESHOLD
        if mask.any():
            return LesionMask(tuple(int(v) for v in first), mask, "probability>=0.5")
        peak = float(in_box.max()) if in_box.size else 0.0
        if peak > MIN_PEAK:
            return LesionMask(tuple(int(v) for v in first), in_box >= peak / 2, "half-maximum")
    ellipsoid = np.sum(((points - center) / half) ** 2, axis=-1) <= 1.0
    if not ellipsoid.any():  # box thinner than a voxel: keep the voxel nearest the centre
        ellipsoid = np.zeros(inside_box.shape, bool)
        flat = np.argmin(np.sum((points - center) ** 2, axis=-1))
        ellipsoid.flat[flat] = True
    return LesionMask(tuple(int(v) for v in first), ellipsoid, "ellipsoid")


def mask_volume_cm3(mask: LesionMask, reference: sitk.Image) -> float:
    return mask.voxels * float(np.prod(reference.GetSpacing())) / 1000.0


def zones_on_grid(zones: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """The zonal label map (1 = CG, 2 = PZ) as an array on the reference grid (nearest)."""
    if not same_grid(zones, reference):
        zones = sitk.Resample(zones, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayViewFromImage(zones)


def lesion_zone(mask: LesionMask, zones_array: np.ndarray) -> str:
    """The zone holding most of the lesion's voxels: 'CG', 'PZ' or 'outside'."""
    k, j, i = mask.lo[2], mask.lo[1], mask.lo[0]
    crop = zones_array[k:k + mask.mask.shape[0], j:j + mask.mask.shape[1], i:i + mask.mask.shape[2]]
    labels = crop[mask.mask].astype(int)
    if labels.size == 0:
        return "outside"
    counts = np.bincount(np.clip(labels, 0, 2), minlength=3)
    return ZONE_NAMES[int(np.argmax(counts))]
