"""Lesion growing as the authors' released code does it (`grow --method released`).

The paper ("Automated lesion growing") grows a SimpleITK threshold level set from the
ProstateX position on T2, b800 and Ktrans and keeps voxels found in two of the three; it
gives no thresholds. The authors' released code (OscarPellicer/prostate_lesion_detection)
differs, as the project's reading of that code records it:

* thresholds: mean ± f·σ of the sequence over a box of 3 × 5 × 5 voxels (slices × rows ×
  columns of the T2 grid) centred on the seed;
* four sequences: T2, high-b DWI, ADC and Ktrans;
* each is grown twice, from the seed and from the registration-shifted seed, giving 8 masks;
* a voxel is kept when at least 3 of the 8 masks hold it.

Where that description is silent we take the reading closest to the paper's text:

* the growing itself is the paper's threshold level set (SimpleITK
  ThresholdSegmentationLevelSet) with lower/upper = mean ∓ f·σ, started from a small sphere
  at the seed, run on the same isotropic working grid as `growing.grow_lesion`;
* f = `ReleasedGrowParams.factor`: its value is not stated. 1.0 scored best of 0.5, 0.75, 1,
  1.5, 2, 2.5, 3, 4 on the phantoms the paper rule was tuned on (seeds 100–111: mean Dice
  0.59; 2 gave 0.35, wider intervals leak into the gland);
* the registration-shifted seed is where the seed's tissue lies on the registered DWI/ADC:
  registration maps T2 point x to DWI point T(x), so a position p read on the DWI shows up
  at T⁻¹(p) ≈ p − (T(p) − p) (first-order inverse of a smooth field). Without a transform
  the shifted seed is the seed, and its four masks are the same as the original's (the vote
  is then effectively 2 of 4 sequences);
* "segmented areas" are kept wherever they are (no connected-component filter after the
  vote), as in the paper's text; an absent sequence contributes empty masks.

The safety corrections of `growing.grow_lesion` apply unchanged and are flagged the same
way (`clipped_to_prostate`, `clipped_max_volume`, `fallback_sphere`), so both rules write the
same report format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import ParameterError
from .growing import (GrownLesion, GrowParams, Seed, SequenceVote, _component_at, _distances, _voxel_points,
                      growing_sequences, mask_on_t2_region, seed_region, within_margin)

RELEASED_SEQUENCES = ("T2", "DWI_HIGH", "ADC", "KTRANS")


@dataclass
class ReleasedGrowParams(GrowParams):
    factor: float = 1.0  # f in mean ± f·sigma of the seed box (not stated; chosen on training phantoms)
    box_voxels: tuple[int, int, int] = (3, 5, 5)  # slices, rows, columns of the T2 grid
    min_masks: int = 3  # a voxel is kept when at least this many of the 8 masks hold it

    def validate(self) -> None:
        super().validate()
        if not self.factor > 0:
            raise ParameterError(f"lesion growing parameter factor={self.factor!r} is out of range.")
        if self.min_masks < 1 or any(int(b) < 1 or int(b) % 2 == 0 for b in self.box_voxels):
            raise ParameterError("lesion growing parameters min_masks / box_voxels are out of range "
                                 "(box sides must be odd and positive).")


def vote_masks(masks: Sequence[np.ndarray], min_masks: int = 3) -> np.ndarray:
    """Voxels held by at least `min_masks` of the masks (the released 3-of-8 rule)."""
    if not masks:
        raise ParameterError("no masks to vote on.")
    return np.sum([np.asarray(m, bool) for m in masks], axis=0) >= min_masks


def released_sequences(case, transform: Optional[sitk.Transform] = None) -> dict[str, Optional[sitk.Image]]:
    """T2, high-b DWI, ADC and Ktrans; DWI and ADC go through `transform` (fixed T2 -> moving
    DWI/ADC), T2 and Ktrans stay as acquired (see `growing.growing_sequences`)."""
    seqs = growing_sequences(case, transform)
    adc = case.adc
    if adc is not None and transform is not None:
        adc = sitk.Resample(adc, case.t2, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    seqs["ADC"] = adc
    return seqs


def shifted_seed(point: Sequence[float], transform: Optional[sitk.Transform]) -> tuple[float, float, float]:
    """T⁻¹(p) to first order, p − (T(p) − p); p itself without a transform."""
    p = np.array(point, float)
    if transform is None:
        return tuple(float(v) for v in p)
    return tuple(float(v) for v in 2.0 * p - np.array(transform.TransformPoint(tuple(p))))


def _box(work: sitk.Image, t2: sitk.Image, point: Sequence[float], box_voxels: Sequence[int]) -> np.ndarray:
    """Working-grid voxels inside the 3 × 5 × 5 T2-voxel box centred on `point`."""
    phys, _ = _voxel_points(work)
    axes = np.array(t2.GetDirection()).reshape(3, 3)
    along = (phys - np.array(point)) @ axes / np.array(t2.GetSpacing())  # offsets in T2 voxels (i, j, k)
    half = np.array([box_voxels[2], box_voxels[1], box_voxels[0]], float) / 2.0
    return np.all(np.abs(along) <= half, axis=-1)


def _grow_one(feature: sitk.Image, box: np.ndarray, init_level: np.ndarray, seed_np, params: ReleasedGrowParams,
              name: str) -> tuple[SequenceVote, np.ndarray]:
    values = sitk.GetArrayViewFromImage(feature)[box]
    empty = np.zeros(init_level.shape, bool)
    if values.size == 0:
        return SequenceVote(name, "abstained"), empty
    mean, sigma = float(values.mean()), float(values.std())
    if not sigma > 0:  # a flat box gives a zero-width interval: nothing to grow
        return SequenceVote(name, "abstained", seed_median=mean), empty
    vote = SequenceVote(name, "voted", lower=mean - params.factor * sigma, upper=mean + params.factor * sigma,
                        seed_median=mean)
    level = sitk.GetImageFromArray(init_level.astype(np.float32))
    level.CopyInformation(feature)
    f = sitk.ThresholdSegmentationLevelSetImageFilter()
    f.SetLowerThreshold(vote.lower)
    f.SetUpperThreshold(vote.upper)
    f.SetMaximumRMSError(params.max_rms_error)
    f.SetNumberOfIterations(params.iterations)
    f.SetCurvatureScaling(params.curvature)
    f.SetPropagationScaling(1.0)
    f.ReverseExpansionDirectionOn()  # initial level positive inside: positive output = inside
    mask = _component_at(sitk.GetArrayFromImage(f.Execute(level, feature)) > 0, seed_np)
    vote.voxels = int(mask.sum())
    return vote, mask


def grow_lesion_released(t2: sitk.Image, seed: Seed, sequences: dict[str, Optional[sitk.Image]], label: int = 1,
                         prostate: Optional[sitk.Image] = None, params: Optional[GrowParams] = None,
                         zones: Optional[sitk.Image] = None, transform: Optional[sitk.Transform] = None
                         ) -> tuple[np.ndarray, tuple[list[int], list[int]], GrownLesion]:
    """Same contract as `growing.grow_lesion`, with the released rule (module docstring).

    `sequences` maps "T2", "DWI_HIGH", "ADC", "KTRANS" to images already registered to T2
    (`released_sequences`); `transform` (fixed T2 -> moving DWI/ADC) gives the shifted seed.
    """
    if not isinstance(params, ReleasedGrowParams):  # the shared settings (ROI, grid, clipping) carry over
        params = ReleasedGrowParams(**(vars(params) if params is not None else {}))
    params.validate()
    point, seed_index, start, size, ref, work = seed_region(t2, seed, params)

    starts = [point]
    moved = shifted_seed(point, transform)
    if moved != point:
        starts.append(moved)
    per_start = []
    for p in starts:
        idx = work.TransformPhysicalPointToIndex(p)
        seed_np = tuple(int(min(max(idx[d], 0), work.GetSize()[d] - 1)) for d in (2, 1, 0))
        dist, _, _ = _distances(work, p)
        per_start.append((p, seed_np, params.seed_radius_mm - dist, _box(work, t2, p, params.box_voxels)))

    votes, masks = [], []
    for name in RELEASED_SEQUENCES:
        image = sequences.get(name)
        if image is None:
            votes.append(SequenceVote(name, "absent"))
            masks += [np.zeros(work.GetSize()[::-1], bool)] * 2
            continue
        feature = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), work, sitk.Transform(), sitk.sitkLinear, 0.0,
                                sitk.sitkFloat32)
        if params.smoothing_mm > 0:
            feature = sitk.SmoothingRecursiveGaussian(feature, params.smoothing_mm)
        grown = []
        for n, (_, seed_np, init_level, box) in enumerate(per_start):
            vote, mask = _grow_one(feature, box, init_level, seed_np, params,
                                   name if n == 0 else f"{name} (shifted seed)")
            votes.append(vote)
            grown.append(mask)
        masks += grown if len(grown) == 2 else grown * 2  # no shift: the same mask counts for both seeds

    dist, _, _ = _distances(work, point)
    seed_disc = dist <= params.seed_radius_mm
    flags: list[str] = []
    mask = vote_masks(masks, params.min_masks)
    if not mask.any():
        flags.append("fallback_sphere")
        mask = dist <= params.fallback_radius_mm
    gland = None
    if prostate is not None:
        gland = sitk.GetArrayFromImage(sitk.Resample(prostate, work, sitk.Transform(), sitk.sitkNearestNeighbor)) > 0
    seed_np = per_start[0][1]
    if zones is not None:
        zone = sitk.GetArrayFromImage(sitk.Resample(zones, work, sitk.Transform(), sitk.sitkNearestNeighbor))
        if zone[seed_np] > 0:
            gland = zone == zone[seed_np]
    if gland is not None:
        allowed = within_margin(gland, params)
        if (mask & ~allowed).any():
            flags.append("clipped_to_prostate")
            mask = (mask & allowed) | seed_disc
    voxel_cc = params.working_spacing_mm ** 3 / 1000.0
    if mask.sum() * voxel_cc > params.max_volume_cc:
        flags.append("clipped_max_volume")
        mask &= dist <= (3.0 * params.max_volume_cc * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)

    back, volume = mask_on_t2_region(mask, work, ref, seed_index, start)
    report = GrownLesion(seed, label, volume, votes, params.min_masks, flags)
    return back, (start, size), report
