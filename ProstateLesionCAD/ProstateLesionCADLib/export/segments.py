"""The segments every export writes: lesions from detections, zones from a zones label map.

Lesions are ranked by score (ties by detection id) and masked with
`lesions.masks.detection_mask` on the T2 grid with the probability map resampled linearly
onto that grid when it lies on another one: the Slicer panel does exactly this
(ProstateLesionCADSlicer.lesion_nodes), so ranks, names and voxels agree with what it
shows. A detection whose box lies outside the T2 grid gets no segment, as in the panel;
its rank is used up all the same so that names match.

Zones: label 1 = central gland (CG), 2 = peripheral zone (PZ), resampled onto the T2 grid
with nearest neighbour when on another grid; an empty zone gets no segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..formats import DetectionCase
from ..ggg_palette import (ANATOMICAL_STRUCTURE, CATEGORY, PROSTATE, ZONES, Code, GGGClass, ZoneClass, ggg_class,
                           lesion_name)
from ..image_files import same_grid
from ..lesions.masks import LesionMask, detection_mask, lesion_zone, mask_volume_cm3, zones_on_grid

DESCRIPTION_CHARS = 64  # DICOM LO: SegmentDescription, CodeMeaning


@dataclass(frozen=True)
class Algorithm:
    """What made a group of segments (the detector model, the zones model)."""

    name: str
    version: str


@dataclass
class LesionFacts:
    """What the panel's lesion table says about one lesion."""

    rank: int
    detection_id: int
    ggg: int
    score: float
    volume_cm3: float
    zone: str  # "CG", "PZ", "outside", or "" without zones
    center_lps: tuple[float, float, float]
    mask_source: str  # "probability>=0.5", "half-maximum", "ellipsoid"

    @property
    def ggg_class(self) -> GGGClass:
        return ggg_class(self.ggg)


@dataclass
class Segment:
    """One segment: ASCII name and description, colour, codes and a mask on the T2 grid."""

    name: str
    description: str
    tracking_id: str
    rgb: tuple[float, float, float]
    category: Code
    type_code: Code
    anatomic_region: Optional[Code]
    crop: LesionMask  # mask cropped to its box on the T2 grid (indices i, j, k; array k, j, i)
    volume_cm3: float
    lesion: Optional[LesionFacts] = None
    zone: Optional[ZoneClass] = None

    def mask(self, shape_kji: tuple[int, int, int]) -> np.ndarray:
        """The whole mask on the T2 grid, array order (k, j, i)."""
        full = np.zeros(shape_kji, bool)
        i, j, k = self.crop.lo
        nk, nj, ni = self.crop.mask.shape
        full[k:k + nk, j:j + nj, i:i + ni] = self.crop.mask
        return full

    @property
    def voxels(self) -> int:
        return self.crop.voxels


def probability_on_grid(probability: Optional[sitk.Image], t2: sitk.Image) -> Optional[np.ndarray]:
    """The probability map as a float32 array on the T2 grid (k, j, i), as the panel resamples it."""
    if probability is None:
        return None
    if not same_grid(probability, t2):
        probability = sitk.Resample(probability, t2, sitk.Transform(), sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(sitk.Cast(probability, sitk.sitkFloat32))


def lesion_segments(case: DetectionCase, t2: sitk.Image, probability: Optional[sitk.Image] = None,
                    zones: Optional[sitk.Image] = None, min_score: float = 0.0) -> list[Segment]:
    """One segment per detection scoring at least `min_score`, in rank order."""
    prob = probability_on_grid(probability, t2)
    zones_array = zones_on_grid(zones, t2) if zones is not None else None
    segments = []
    for rank, det in enumerate(sorted(case.detections, key=lambda d: (-d.score, d.id)), start=1):
        if det.score < min_score:
            continue
        crop = detection_mask(det, t2, prob)
        if crop is None:
            continue
        facts = LesionFacts(rank=rank, detection_id=det.id, ggg=det.ggg, score=float(det.score),
                            volume_cm3=mask_volume_cm3(crop, t2),
                            zone=lesion_zone(crop, zones_array) if zones_array is not None else "",
                            center_lps=tuple(float(v) for v in det.center_lps), mask_source=crop.source)
        cls = facts.ggg_class
        segments.append(Segment(
            name=lesion_name(rank, det.ggg, det.score, ascii_only=True),
            description=f"{cls.name}, score {det.score:.4f}, detection {det.id}"[:DESCRIPTION_CHARS],
            tracking_id=f"Lesion {rank}", rgb=cls.rgb, category=CATEGORY, type_code=cls.type_code,
            anatomic_region=PROSTATE, crop=crop, volume_cm3=facts.volume_cm3, lesion=facts))
    return segments


def zone_segments(zones: sitk.Image, t2: sitk.Image, source: str = "prostate-cad zones") -> list[Segment]:
    """The CG and PZ segments of a zones label map (empty zones left out)."""
    labels = np.asarray(zones_on_grid(zones, t2))
    segments = []
    for value, zone in ZONES.items():
        mask = labels == value
        if not mask.any():
            continue
        where = np.nonzero(mask)
        lo = [int(a.min()) for a in where]  # k, j, i
        hi = [int(a.max()) + 1 for a in where]
        crop = LesionMask((lo[2], lo[1], lo[0]), mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].copy(), "zones")
        segments.append(Segment(
            name=zone.name, description=f"{zone.abbreviation} from {source}"[:DESCRIPTION_CHARS],
            tracking_id=zone.abbreviation, rgb=zone.rgb, category=ANATOMICAL_STRUCTURE, type_code=zone.type_code,
            anatomic_region=None, crop=crop, volume_cm3=mask_volume_cm3(crop, t2), zone=zone))
    return segments
