"""Grow lesion masks from seed points (main paper, methods, "Automated lesion growing").

The paper runs a SimpleITK threshold level-set segmentation from each ProstateX lesion
position independently on T2, on the high-b DWI and on Ktrans, and keeps the voxels
found in at least two of the three. The paper gives no thresholds; our rule
(`_thresholds`) takes them from the intensity statistics around the seed:

* seed value  m_s = median inside a disc of `seed_radius_mm` on the seed's slice;
* background  m_b = median of a ring `ring_mm` around the seed (seed slice and its
  neighbours), restricted to the prostate when a mask is given;
* noise       s   = 1.4826 · MAD of that ring.

A sequence whose |m_s − m_b| < `min_contrast` · s shows no lesion at the seed and
abstains. Otherwise the lesion side is the seed's side of the midpoint
t = (m_s + m_b) / 2: a darker seed (T2) grows over [min, t], a brighter one (high-b,
Ktrans) over [t, max]. The polarity is read from the data, not assumed.

Vote rule: with n sequences that take part (present and not abstaining) a voxel is kept
when at least ceil(2n/3) of them found it: 2 of 3 (the paper), 2 of 2, 1 of 1. When no
sequence takes part the lesion is a sphere of `fallback_radius_mm` around the seed,
flagged `fallback_sphere`. Every correction is flagged, never silent: `seed_added`
(the vote missed the seed), `clipped_to_prostate` (it left the gland; clipped to the
gland dilated by `prostate_margin_mm`), `clipped_max_volume` (it leaked beyond
`max_volume_cc`; clipped to the sphere of that volume around the seed).
Growing is deterministic (no random state anywhere).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import CaseError, ParameterError
from ..progress import ProgressCallback, silent

GROWING_SEQUENCES = ("T2", "DWI_HIGH", "KTRANS")


@dataclass(frozen=True)
class Seed:
    id: int
    center_lps: tuple[float, float, float]
    ggg: int


@dataclass
class GrowParams:
    roi_half_mm: float = 20.0  # in-plane half size of the working region around a seed
    roi_half_slices: int = 3
    seed_radius_mm: float = 2.0
    ring_mm: tuple[float, float] = (9.0, 15.0)
    min_contrast: float = 1.0  # |m_s - m_b| in units of the ring noise
    background_percentile: float = 10.0
    max_volume_cc: float = 10.0
    prostate_margin_mm: float = 2.0
    fallback_radius_mm: float = 3.0
    working_spacing_mm: float = 0.75  # isotropic grid the level sets run on
    iterations: int = 250
    smoothing_mm: float = 0.5  # Gaussian sigma applied to each sequence before statistics and growing
    curvature: float = 0.2
    max_rms_error: float = 0.001

    def validate(self) -> None:
        checks = {"roi_half_mm": self.roi_half_mm > 0, "roi_half_slices": self.roi_half_slices >= 0,
                  "seed_radius_mm": self.seed_radius_mm > 0, "max_volume_cc": self.max_volume_cc > 0,
                  "ring_mm": 0 <= self.ring_mm[0] < self.ring_mm[1], "min_contrast": self.min_contrast >= 0,
                  "iterations": self.iterations >= 1, "fallback_radius_mm": self.fallback_radius_mm > 0}
        for name, ok in checks.items():
            if not ok:
                raise ParameterError(f"lesion growing parameter {name}={getattr(self, name)!r} is out of range.")


@dataclass
class SequenceVote:
    sequence: str
    status: str  # "voted", "abstained" or "absent"
    polarity: Optional[str] = None  # "dark" or "bright"
    lower: Optional[float] = None
    upper: Optional[float] = None
    seed_median: Optional[float] = None
    ring_median: Optional[float] = None
    contrast: Optional[float] = None  # (m_s - m_b) / noise
    voxels: int = 0


@dataclass
class GrownLesion:
    seed: Seed
    label: int
    volume_cc: float
    votes: list[SequenceVote]
    required_votes: int
    flags: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"id": self.seed.id, "label": self.label, "ggg": self.seed.ggg,
                "center_lps": list(self.seed.center_lps), "volume_cc": round(self.volume_cc, 4),
                "required_votes": self.required_votes, "flags": self.flags,
                "sequences": [vars(v) for v in self.votes]}


def required_votes(n_voting: int) -> int:
    """ceil(2n/3): 2 of 3 as in the paper, 2 of 2, 1 of 1."""
    return max(1, math.ceil(2 * n_voting / 3))


# ------------------------------------------------------------------ geometry helpers

def _roi(t2: sitk.Image, seed_index: Sequence[int], params: GrowParams) -> tuple[list[int], list[int]]:
    sx, sy, _ = t2.GetSpacing()
    half = [int(math.ceil(params.roi_half_mm / sx)), int(math.ceil(params.roi_half_mm / sy)), params.roi_half_slices]
    start = [max(0, seed_index[d] - half[d]) for d in range(3)]
    stop = [min(t2.GetSize()[d], seed_index[d] + half[d] + 1) for d in range(3)]
    return start, [stop[d] - start[d] for d in range(3)]


def _voxel_points(ref: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Physical LPS points of every voxel (numpy order z, y, x, 3) and their slice index k."""
    size = ref.GetSize()
    k, j, i = np.meshgrid(np.arange(size[2]), np.arange(size[1]), np.arange(size[0]), indexing="ij")
    idx = np.stack([i, j, k], -1).astype(float)
    direction = np.array(ref.GetDirection()).reshape(3, 3)
    return np.array(ref.GetOrigin()) + (idx * np.array(ref.GetSpacing())) @ direction.T, k


def _distances(ref: sitk.Image, point: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3D distance (mm), in-plane distance (mm) and slice offset (voxels) of every voxel to `point`."""
    phys, k = _voxel_points(ref)
    delta = phys - np.array(point)
    normal = np.array(ref.GetDirection()).reshape(3, 3)[:, 2]
    inplane = delta - (delta @ normal)[..., None] * normal
    slice_offset = k - ref.TransformPhysicalPointToContinuousIndex(tuple(point))[2]
    return np.linalg.norm(delta, axis=-1), np.linalg.norm(inplane, axis=-1), slice_offset


# ------------------------------------------------------------------ one sequence

def _thresholds(values: np.ndarray, seed_disc: np.ndarray, ring: np.ndarray, params: GrowParams,
                name: str) -> SequenceVote:
    if seed_disc.sum() == 0 or ring.sum() < 10:
        return SequenceVote(name, "abstained")
    m_s = float(np.median(values[seed_disc]))
    ring_vals = values[ring]
    m_b = float(np.median(ring_vals))
    noise = 1.4826 * float(np.median(np.abs(ring_vals - m_b)))
    noise = max(noise, 1e-6 * max(1.0, abs(m_b)))
    contrast = (m_s - m_b) / noise
    vote = SequenceVote(name, "abstained", seed_median=m_s, ring_median=m_b, contrast=round(contrast, 3))
    if abs(contrast) < params.min_contrast:
        return vote
    # Threshold: the midpoint, pushed out to the ring's 10th/90th percentile so that at most a
    # tenth of the surrounding tissue lies on the lesion side (heterogeneous glands leak otherwise).
    if m_s < m_b:
        threshold = min(0.5 * (m_s + m_b), float(np.percentile(ring_vals, params.background_percentile)))
        if threshold <= m_s:
            return vote
        vote.polarity, vote.upper = "dark", threshold
    else:
        threshold = max(0.5 * (m_s + m_b), float(np.percentile(ring_vals, 100 - params.background_percentile)))
        if threshold >= m_s:
            return vote
        vote.polarity, vote.lower = "bright", threshold
    vote.status = "voted"
    return vote


def _lesion_speed_image(feature: sitk.Image, vote: SequenceVote) -> tuple[sitk.Image, float]:
    """Rescale a sequence so that the threshold maps to 0 and the seed's median to 1 (the
    lesion side positive). Every sequence then drives the level set with comparable speed, whatever its
    intensity units (T2 in hundreds, Ktrans below 1); returns the image and its maximum."""
    threshold = vote.upper if vote.polarity == "dark" else vote.lower
    sign = -1.0 if vote.polarity == "dark" else 1.0
    scaled = (feature - threshold) * (sign / max(abs(vote.seed_median - threshold), 1e-12))
    return scaled, float(sitk.GetArrayViewFromImage(scaled).max())


def _level_set(feature: sitk.Image, init_level: np.ndarray, vote: SequenceVote, params: GrowParams) -> np.ndarray:
    """Threshold level set (SimpleITK) from the seed sphere, on the isotropic working grid.

    ITK's threshold speed peaks mid-interval and is 0 at both ends, so the interval runs
    from the threshold (0 after rescaling) to twice the maximum: the speed then rises
    monotonically into the lesion."""
    speed, top = _lesion_speed_image(feature, vote)
    level = sitk.GetImageFromArray(init_level.astype(np.float32))
    level.CopyInformation(feature)
    f = sitk.ThresholdSegmentationLevelSetImageFilter()
    f.SetLowerThreshold(0.0)
    f.SetUpperThreshold(2.0 * max(top, 1.0))
    f.SetMaximumRMSError(params.max_rms_error)
    f.SetNumberOfIterations(params.iterations)
    f.SetCurvatureScaling(params.curvature)
    f.SetPropagationScaling(1.0)
    f.ReverseExpansionDirectionOn()  # initial level positive inside: positive output = inside
    return sitk.GetArrayFromImage(f.Execute(level, speed)) > 0


def _component_at(mask: np.ndarray, seed_np: tuple[int, int, int]) -> np.ndarray:
    if not mask[seed_np]:
        return np.zeros_like(mask)
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(img, True))
    return labels == labels[seed_np]


# ------------------------------------------------------------------ public API

def _working_grid(ref: sitk.Image, spacing_mm: float) -> sitk.Image:
    """An isotropic grid over the same physical box as `ref`: level sets assume isotropic
    voxels (their curvature term works in voxel units), T2 slices are 3 mm thick."""
    extent = np.array(ref.GetSize()) * np.array(ref.GetSpacing())
    size = [max(1, int(math.ceil(e / spacing_mm))) for e in extent]
    direction = np.array(ref.GetDirection()).reshape(3, 3)
    corner = np.array(ref.GetOrigin()) - direction @ (0.5 * np.array(ref.GetSpacing()))
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing([spacing_mm] * 3)
    grid.SetDirection(ref.GetDirection())
    grid.SetOrigin(tuple(corner + direction @ np.full(3, 0.5 * spacing_mm)))
    return grid


def _to_image(array: np.ndarray, ref: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(array.astype(np.float32))
    img.CopyInformation(ref)
    return img


def seed_region(t2: sitk.Image, seed: Seed, params: GrowParams
                ) -> tuple[tuple[float, ...], list[int], list[int], list[int], sitk.Image, sitk.Image]:
    """The seed's point and T2 voxel index, its T2 region (start, size, the region itself) and the
    isotropic working grid over it; CaseError when the seed lies outside the T2."""
    point = tuple(float(v) for v in seed.center_lps)
    cont = t2.TransformPhysicalPointToContinuousIndex(point)
    if not all(-0.5 <= cont[d] <= t2.GetSize()[d] - 0.5 for d in range(3)):
        raise CaseError(f"Seed {seed.id} at LPS ({point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f}) mm lies outside the T2 image.")
    seed_index = [int(round(c)) for c in cont]
    start, size = _roi(t2, seed_index, params)
    ref = sitk.RegionOfInterest(t2, size, start)
    return point, seed_index, start, size, ref, _working_grid(ref, params.working_spacing_mm)


def within_margin(gland: np.ndarray, params: GrowParams) -> np.ndarray:
    """The working-grid voxels within `prostate_margin_mm` of the gland (or zone) mask: where a
    grown lesion may lie."""
    radius = max(1, int(round(params.prostate_margin_mm / params.working_spacing_mm)))
    return sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.GetImageFromArray(gland.astype(np.uint8)), [radius] * 3)) > 0


def mask_on_t2_region(mask: np.ndarray, work: sitk.Image, ref: sitk.Image, seed_index: list[int],
                      start: list[int]) -> tuple[np.ndarray, float]:
    """A working-grid mask back on the seed's T2 region (linear interpolation, half-way threshold;
    the seed voxel always in) and its volume in cm³."""
    back = sitk.GetArrayFromImage(sitk.Resample(_to_image(mask, work), ref, sitk.Transform(), sitk.sitkLinear)) >= 0.5
    back[tuple(seed_index[d] - start[d] for d in (2, 1, 0))] = True  # the seed is always part of its lesion
    return back, float(back.sum() * np.prod(ref.GetSpacing()) / 1000.0)


def grow_lesion(t2: sitk.Image, seed: Seed, sequences: dict[str, Optional[sitk.Image]], label: int = 1,
                prostate: Optional[sitk.Image] = None, params: Optional[GrowParams] = None,
                zones: Optional[sitk.Image] = None) -> tuple[np.ndarray, tuple[list[int], list[int]], GrownLesion]:
    """Grow one lesion; returns (mask in the seed's T2 working region, (start, size) of that region, report).

    `sequences` maps "T2", "DWI_HIGH", "KTRANS" to images already registered to T2 (any
    grid: they are resampled linearly onto an isotropic working grid around the seed);
    None or missing = absent. `prostate` (mask) clips leaks out of the gland; `zones`
    (1 = CG, 2 = PZ), when given, clips them to the seed's own zone instead (flag
    `clipped_to_prostate` either way).
    """
    params = params or GrowParams()
    params.validate()
    point, seed_index, start, size, ref, work = seed_region(t2, seed, params)
    seed_work = work.TransformPhysicalPointToIndex(point)
    seed_np = tuple(int(min(max(seed_work[d], 0), work.GetSize()[d] - 1)) for d in (2, 1, 0))

    dist, inplane, _ = _distances(work, point)
    dz = np.sqrt(np.maximum(dist ** 2 - inplane ** 2, 0.0))  # distance along the slice normal
    seed_disc = dist <= params.seed_radius_mm
    ring = (dz <= 1.5 * t2.GetSpacing()[2]) & (inplane >= params.ring_mm[0]) & (inplane <= params.ring_mm[1])
    gland = None
    if prostate is not None:
        gland = sitk.GetArrayFromImage(sitk.Resample(prostate, work, sitk.Transform(), sitk.sitkNearestNeighbor)) > 0
        if (ring & gland).sum() >= 10:
            ring = ring & gland
    if zones is not None:  # the seed's zone bounds the lesion (CG and PZ differ on every sequence)
        zone = sitk.GetArrayFromImage(sitk.Resample(zones, work, sitk.Transform(), sitk.sitkNearestNeighbor))
        if zone[seed_np] > 0:
            gland = zone == zone[seed_np]
    init_level = params.seed_radius_mm - dist  # signed distance to the seed sphere, positive inside

    votes, found = [], []
    for name in GROWING_SEQUENCES:
        image = sequences.get(name)
        if image is None:
            votes.append(SequenceVote(name, "absent"))
            continue
        feature = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), work, sitk.Transform(), sitk.sitkLinear, 0.0,
                                sitk.sitkFloat32)
        if params.smoothing_mm > 0:  # noise in the seed statistics and the speed image would stall the front
            feature = sitk.SmoothingRecursiveGaussian(feature, params.smoothing_mm)
        vote = _thresholds(sitk.GetArrayFromImage(feature), seed_disc, ring, params, name)
        if vote.status == "voted":
            region = _component_at(_level_set(feature, init_level, vote, params), seed_np)
            vote.voxels = int(region.sum())
            found.append(region)
        votes.append(vote)

    flags: list[str] = []
    need = required_votes(len(found))
    if found:
        mask = _component_at(np.sum(found, axis=0) >= need, seed_np)
        if not mask[seed_np]:
            flags.append("seed_added")
            mask = _component_at((np.sum(found, axis=0) >= need) | seed_disc, seed_np)
    else:
        flags.append("fallback_sphere")
        mask = dist <= params.fallback_radius_mm
    mask = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(mask.astype(np.uint8)))) > 0
    if gland is not None:
        allowed = within_margin(gland, params)
        if (mask & ~allowed).any():
            flags.append("clipped_to_prostate")
            mask = _component_at((mask & allowed) | seed_disc, seed_np)
    voxel_cc = params.working_spacing_mm ** 3 / 1000.0
    if mask.sum() * voxel_cc > params.max_volume_cc:
        flags.append("clipped_max_volume")
        mask &= dist <= (3.0 * params.max_volume_cc * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)

    back, volume = mask_on_t2_region(mask, work, ref, seed_index, start)
    report = GrownLesion(seed, label, volume, votes, need if found else 0, flags)
    return back, (start, size), report


def grow_lesions(t2: sitk.Image, seeds: Sequence[Seed], sequences: dict[str, Optional[sitk.Image]],
                 prostate: Optional[sitk.Image] = None, params: Optional[GrowParams] = None,
                 progress: Optional[ProgressCallback] = None, zones: Optional[sitk.Image] = None,
                 grow_one: Optional[Callable] = None) -> tuple[sitk.Image, list[GrownLesion]]:
    """Grow every seed into a label map on the T2 grid (label i+1 for seeds[i]).

    `grow_one` grows one lesion with `grow_lesion`'s arguments and result (default
    `grow_lesion`; lesions.grow_methods names the other rules).

    Where two grown lesions overlap, the voxel keeps the label of the earlier seed; the later
    lesion's volume counts only its own voxels and it is flagged `overlaps_earlier_lesion`, or
    `no_voxels_of_its_own` when an earlier lesion holds all of it (its label is then absent).
    """
    progress = progress or silent
    if not seeds:
        raise CaseError("No seed points were given: nothing to grow.")
    labels = np.zeros(sitk.GetArrayViewFromImage(t2).shape, np.uint16)
    reports = []
    for i, seed in enumerate(seeds):
        progress(i / len(seeds), f"growing lesion {seed.id}")
        mask, (start, size), report = (grow_one or grow_lesion)(t2, seed, sequences, i + 1, prostate, params, zones)
        z0, y0, x0 = start[2], start[1], start[0]
        window = labels[z0:z0 + size[2], y0:y0 + size[1], x0:x0 + size[0]]
        own = (window == 0) & mask
        window[own] = i + 1
        if own.sum() < mask.sum():
            report.flags.append("overlaps_earlier_lesion" if own.any() else "no_voxels_of_its_own")
            report.volume_cc *= float(own.sum()) / float(mask.sum())
        reports.append(report)
    progress(1.0, f"grew {len(seeds)} lesion(s)")
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(t2)
    return out, reports


def growing_sequences(case, transform: Optional[sitk.Transform] = None) -> dict[str, Optional[sitk.Image]]:
    """The three images the paper grows on, from a Case: T2, the high-b DWI, Ktrans.

    High b: the measured image with the highest b ≥ 800 (the paper used b800), else the
    scanner-computed one. `transform` (fixed T2 -> moving DWI/ADC, as registration writes
    it) resamples the DWI onto T2 first. Ktrans never goes through it: the paper found "DW
    sequences and the ADC map" misaligned "to T2 and the other sequences" and applies the
    chosen transform "to both DW and ADC sequences" only (Pre-processing, "Automated sequence
    registration"), as the authors' released pre-processing does (OscarPellicer/
    prostate_lesion_detection, `ProstateX preprocessing.ipynb`: the transform resamples the
    DWI and ADC channels, not Ktrans). Ktrans keeps its own grid, like T2: `grow_lesion`
    resamples every image in physical space.
    """
    def high_b(images: dict) -> Optional[sitk.Image]:
        high = sorted(b for b in images if b >= 800)
        return images[high[-1]] if high else None

    dwi = high_b(case.dwi) or high_b(case.dwi_computed)
    if transform is not None and dwi is not None:
        dwi = sitk.Resample(dwi, case.t2, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return {"T2": case.t2, "DWI_HIGH": dwi, "KTRANS": case.ktrans}
