"""Automatic multi-start non-rigid ADC/DWI → T2 registration (main paper, Pre-processing,
"Automated sequence registration"), never worse than no registration.

Method: a BSpline transform between the spatial gradient magnitude of T2 (fixed) and of
the ADC map (moving), Mattes mutual information, gradient descent on the BSpline
parameters (SimpleITK). It is run from many initialisations (`registration_multistart`),
every result scored by the mean of the T2/ADC gradient correlations in CG and PZ and the
mutual information (`registration_scoring`); the identity is scored the same way and kept
unless a start beats it. The chosen transform is applied to the ADC and to every DWI image.
Presets "paper" (the default) and "fast" are this method; "released" follows the authors'
released code instead (`released`: signed derivative images of the detector's crop, runs
differing only in their random metric sampling, their weighted score), with the same guard.

The transform (`RegistrationResult.transform`) is an ITK *resampling* transform: it maps a
point of T2 space (fixed, LPS mm) to the corresponding point of the ADC/DWI acquisition
(moving). That is what `sitk.Resample(adc, reference, transform)` needs and what ITK
transform files hold; 3D Slicer reads such a file into a transform node whose
"from parent" transform is this one, so placing the ADC/DWI volumes under that node shows
them aligned to T2 (no inversion needed anywhere).

Registered images keep their own grid (ADC and DWI are resampled onto themselves, value at
x = original value at transform(x)): no up-sampling to the T2 grid, and the same result as
Slicer shows with the volume under the transform node. Later steps (`preprocessing`)
resample to the detector grid anyway.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..study.case import Case
from ..errors import CaseError, ParameterError
from ..image_files import check_grid_size
from ..progress import ProgressCallback, silent, sub_progress
from . import released
from .multistart import PRESETS, RegistrationProblem, check_variants, RegistrationSettings, StartResult, default_workers, run_starts, score_problem
from .scoring import Score, gradient_magnitude, normalise_for_mi, scoring_regions

__all__ = ["PRESETS", "RegistrationSettings", "RegistrationResult", "register_case", "register_images",
           "apply_transform", "apply_to_case", "read_transform", "write_transform", "score_case_transform",
           "identity_transform"]


@dataclass
class RegistrationResult:
    """Outcome of `register_case`: the transform to use and the evidence for choosing it."""

    transform: sitk.Transform  # resampling transform T2 point -> ADC/DWI point (LPS mm)
    identity_kept: bool  # True when no start scored above the identity
    chosen_start: Optional[int]  # index of the chosen start; None for identity or a user transform
    chosen_score: Score
    identity_score: Score
    starts: list[StartResult] = field(default_factory=list)
    settings: Optional[RegistrationSettings] = None
    seed: int = 0
    regions: str = ""  # what the correlations were taken in: "zones", "prostate" or "central"
    timings: dict[str, float] = field(default_factory=dict)
    source: str = "automatic"  # "automatic" or "user" (transform given by the user)

    def summary(self) -> str:
        if self.source == "user":
            return (f"user transform: score {self.chosen_score.total:.4f} "
                    f"(identity {self.identity_score.total:.4f})")
        if self.identity_kept:
            return (f"no start beat the identity (best {self.best_start_total():.4f} <= identity "
                    f"{self.identity_score.total:.4f}); ADC/DWI left unregistered")
        return (f"start {self.chosen_start} chosen: score {self.chosen_score.total:.4f} vs identity "
                f"{self.identity_score.total:.4f}")

    def best_start_total(self) -> float:
        scored = [s.score.total for s in self.starts if s.score is not None]
        return max(scored) if scored else float("nan")

    def as_dict(self) -> dict:
        return {"format": "prostate-cad-registration/1",
                "source": self.source,
                "identity_kept": self.identity_kept,
                "chosen_start": self.chosen_start,
                "summary": self.summary(),
                "transform_direction": "resampling: T2 (fixed) LPS point -> ADC/DWI (moving) LPS point",
                "regions": self.regions,
                "chosen_score": self.chosen_score.as_dict(),
                "identity_score": self.identity_score.as_dict(),
                "seed": self.seed,
                "settings": self.settings.as_dict() if self.settings else None,
                "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
                "starts": [s.as_dict() for s in self.starts]}


def identity_transform() -> sitk.Transform:
    """Identity as an affine (Slicer loads it as an editable linear transform node)."""
    return sitk.AffineTransform(3)


# --- input checks ---------------------------------------------------------------------

def _check_image(image: Optional[sitk.Image], what: str) -> None:
    if image is None:
        raise CaseError(f"The case has no {what} image, so there is nothing to register.")
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        raise CaseError(f"The {what} image has size {image.GetSize()}: registration needs a 3D volume.")
    stats = sitk.StatisticsImageFilter()
    stats.Execute(image)
    if not math.isfinite(stats.GetSum()) or stats.GetMaximum() == stats.GetMinimum():
        raise CaseError(f"The {what} image is empty (all voxels equal {stats.GetMinimum():g} or not finite).")


def _physical_bounds(image: sitk.Image, box_index: Optional[tuple[np.ndarray, np.ndarray]] = None) -> np.ndarray:
    """The 8 corners (LPS mm) of an index box (default: the whole image)."""
    lo, hi = box_index if box_index is not None else (np.zeros(3), np.array(image.GetSize()) - 1.0)
    corners = [[(lo, hi)[(c >> a) & 1][a] for a in range(3)] for c in range(8)]
    return np.array([image.TransformContinuousIndexToPhysicalPoint([float(v) for v in c]) for c in corners])


def _index_box_of_points(image: sitk.Image, points: np.ndarray, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    idx = np.array([image.TransformPhysicalPointToContinuousIndex([float(v) for v in p]) for p in points])
    margin = margin_mm / np.array(image.GetSpacing())
    return np.floor(idx.min(0) - margin), np.ceil(idx.max(0) + margin)


# --- the working problem --------------------------------------------------------------

def _working_region(t2: sitk.Image, zones: Optional[sitk.Image], prostate: Optional[sitk.Image],
                    settings: RegistrationSettings) -> sitk.Image:
    """The T2 sub-volume around the prostate (mask bounding box + margin, else a central box
    of the paper's crop size), resampled to the preset's working spacing."""
    mask = zones if zones is not None else prostate
    box = None
    if mask is not None:
        on_t2 = sitk.Resample(mask, t2, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8) > 0
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(on_t2)
        if stats.HasLabel(1):
            x, y, z, sx, sy, sz = stats.GetBoundingBox(1)
            points = _physical_bounds(t2, (np.array([x, y, z], float), np.array([x + sx - 1, y + sy - 1, z + sz - 1], float)))
            box = _index_box_of_points(t2, points, settings.roi_margin_mm)
    if box is None:
        centre = (np.array(t2.GetSize()) - 1) / 2.0
        half = np.array(settings.central_roi_mm) / 2.0 / np.array(t2.GetSpacing())
        box = (np.floor(centre - half), np.ceil(centre + half))
    lo = np.clip(box[0], 0, np.array(t2.GetSize()) - 1).astype(int)
    hi = np.clip(box[1], 0, np.array(t2.GetSize()) - 1).astype(int)
    region = sitk.RegionOfInterest(t2, [int(v) for v in hi - lo + 1], [int(v) for v in lo])
    if settings.working_spacing_mm is None:
        return sitk.Cast(region, sitk.sitkFloat32)
    spacing = [float(s) for s in settings.working_spacing_mm]
    size = [max(2, int(round(n * s / w))) for n, s, w in zip(region.GetSize(), region.GetSpacing(), spacing)]
    check_grid_size(size, spacing, "registration's working region of the T2")
    return sitk.Resample(region, size, sitk.Transform(), sitk.sitkLinear, region.GetOrigin(), spacing,
                         region.GetDirection(), 0.0, sitk.sitkFloat32)


def _moving_crop(adc: sitk.Image, fixed: sitk.Image, margin_mm: float, what: str) -> sitk.Image:
    """The ADC around the working region (plus a margin for the deformation)."""
    lo, hi = _index_box_of_points(adc, _physical_bounds(fixed), margin_mm)
    size = np.array(adc.GetSize())
    lo_c, hi_c = np.clip(lo, 0, size - 1).astype(int), np.clip(hi, 0, size - 1).astype(int)
    if np.any(hi < 0) or np.any(lo > size - 1) or np.any(hi_c - lo_c < 1):
        raise CaseError(f"The {what} image does not overlap the T2 image around the prostate "
                        "(check that both series belong to the same study).")
    return sitk.Cast(sitk.RegionOfInterest(adc, [int(v) for v in hi_c - lo_c + 1], [int(v) for v in lo_c]),
                     sitk.sitkFloat32)


def build_problem(t2: sitk.Image, adc: sitk.Image, zones: Optional[sitk.Image] = None,
                  prostate: Optional[sitk.Image] = None,
                  settings: RegistrationSettings = PRESETS["paper"]) -> RegistrationProblem | released.ReleasedProblem:
    """Gradient-magnitude images on the working region, and where they are scored (the
    released method: derivative images of the detector's crop, `released.build_problem`)."""
    _check_image(t2, "T2")
    _check_image(adc, "ADC")
    if settings.method == "released":
        return released.build_problem(t2, adc, zones, prostate, settings)
    fixed = _working_region(t2, zones, prostate, settings)
    moving = _moving_crop(adc, fixed, settings.moving_margin_mm, "ADC")
    # Overlap check in physical space: at least part of the working region must map into the ADC.
    ones = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(moving)
    inside = sitk.Resample(ones, fixed, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    if sitk.GetArrayViewFromImage(inside).mean() < 0.25:
        raise CaseError("The ADC image covers less than a quarter of the T2 region around the prostate "
                        "(images do not overlap; check that both series belong to the same study).")
    regions = scoring_regions(fixed, zones, prostate)
    union = np.any(np.stack(regions.masks), axis=0)
    levels = [(normalise_for_mi(gradient_magnitude(fixed, sigma), union),
               normalise_for_mi(gradient_magnitude(moving, sigma))) for sigma in settings.gradient_sigmas_mm]
    fixed_score_grad = gradient_magnitude(fixed, settings.score_sigma_mm)
    shrink = list(settings.level_shrink) + [1] * (len(levels) - len(settings.level_shrink))
    # the gradients are smoothed at each level's sigma: averaging them on a coarser grid loses little
    shrunk = [(sitk.BinShrink(f, [int(k), int(k), 1]) if k > 1 else f, m) for (f, m), k in zip(levels, shrink)]
    masks: dict = {}  # metric mask per margin, shared between variants

    def levels_for(own: RegistrationSettings) -> list:
        if own.metric_margin_mm not in masks:
            masks[own.metric_margin_mm] = _metric_mask(fixed, union, regions.kind, own.metric_margin_mm)
        metric_mask = masks[own.metric_margin_mm]
        masked_from = 0 if own.metric_mask_levels is None else len(levels) - int(own.metric_mask_levels)
        out = []
        for index, (fixed_level, moving_level) in enumerate(shrunk):
            mask = metric_mask if index >= masked_from else None
            if mask is not None and fixed_level.GetSize() != fixed.GetSize():
                mask = sitk.Resample(mask, fixed_level, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
            out.append((fixed_level, moving_level, mask))
        return out

    # The BSpline domain: T2's full extent (a 1-voxel-thick copy would do, but keep geometry exact).
    domain = sitk.Image([int(v) for v in t2.GetSize()], sitk.sitkUInt8)
    domain.CopyInformation(t2)
    return RegistrationProblem(fixed_features=fixed_score_grad,
                               fixed_features_mi=levels[-1][0],
                               moving_image=moving,
                               moving_features_mi=levels[-1][1],
                               levels_mi=levels_for(settings),
                               variant_levels=[levels_for(settings.variant(i)) for i in range(len(settings.start_variants))],
                               domain=domain, regions=regions)


def _metric_mask(fixed: sitk.Image, union: np.ndarray, kind: str, margin_mm: Optional[float]) -> Optional[sitk.Image]:
    """Where the optimiser's metric is sampled: the scoring regions dilated by `margin_mm`, or
    None (the whole working region) without a margin or without a mask."""
    if margin_mm is None or kind == "central":
        return None
    gland = sitk.GetImageFromArray(union.astype(np.uint8))
    gland.CopyInformation(fixed)
    distance = sitk.SignedMaurerDistanceMap(gland, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    mask = sitk.Cast(distance <= float(margin_mm), sitk.sitkUInt8)
    mask.CopyInformation(fixed)
    return mask


def _settings_for(preset: str | RegistrationSettings, starts: Optional[int]) -> RegistrationSettings:
    if isinstance(preset, RegistrationSettings):
        settings = preset
    else:
        if preset not in PRESETS:
            raise ParameterError(f"Unknown registration preset '{preset}' (choose from {', '.join(PRESETS)}).")
        settings = PRESETS[preset]
    check_variants(settings)
    if starts is not None:
        if int(starts) < 1:
            raise ParameterError(f"--starts must be at least 1 (got {starts}).")
        settings = dataclasses.replace(settings, starts=int(starts))
    return settings


def register_images(t2: sitk.Image, adc: sitk.Image, zones: Optional[sitk.Image] = None,
                    prostate: Optional[sitk.Image] = None, preset: str | RegistrationSettings = "paper",
                    starts: Optional[int] = None, seed: int = 0, workers: Optional[int] = None,
                    progress: Optional[ProgressCallback] = None) -> RegistrationResult:
    """Multi-start BSpline registration of `adc` to `t2`; returns the best transform or the
    identity when no start beats it. `workers` processes (default: available cores)."""
    report = progress or silent
    settings = _settings_for(preset, starts)
    began = time.perf_counter()
    report(0.0, "registration: preparing gradient images")
    problem = build_problem(t2, adc, zones, prostate, settings)
    prepared = time.perf_counter()
    identity = score_problem(problem, settings, identity_transform())
    n = settings.starts
    used_workers = default_workers(n) if workers is None else max(1, min(int(workers), n))
    report(0.02, f"registration: {n} starts on {used_workers} process(es), identity score {identity.total:.4f}")
    run_progress = sub_progress(report, 0.02, 0.98)

    def on_done(result: StartResult, done: int) -> None:
        what = f"score {result.score.total:.4f}" if result.score else f"failed ({result.error})"
        run_progress(done / n, f"registration: start {result.index + 1}/{n} done ({done} of {n}), {what}, "
                               f"{result.seconds:.1f} s")

    results = run_starts(problem, settings, n, seed, used_workers, on_done)
    finished = time.perf_counter()
    scored = [r for r in results if r.score is not None]
    best = max(scored, key=lambda r: (r.score.total, -r.index)) if scored else None
    keep_identity = best is None or best.score.total <= identity.total
    result = RegistrationResult(
        transform=identity_transform() if keep_identity else best.transform,
        identity_kept=keep_identity, chosen_start=None if keep_identity else best.index,
        chosen_score=identity if keep_identity else best.score, identity_score=identity, starts=results,
        settings=settings, seed=seed, regions=problem.regions.kind,
        timings={"prepare": prepared - began, "starts_wall": finished - prepared,
                 "starts_cpu": sum(r.cpu_seconds for r in results),
                 "cpu_per_start_mean": float(np.mean([r.cpu_seconds for r in results])) if results else 0.0,
                 "total": finished - began, "workers": float(used_workers)})
    report(1.0, f"registration: {result.summary()}")
    return result


def register_case(case: Case, preset: str | RegistrationSettings = "paper", starts: Optional[int] = None,
                  seed: int = 0, workers: Optional[int] = None,
                  progress: Optional[ProgressCallback] = None) -> RegistrationResult:
    """Register the case's ADC to its T2 (using its zonal/prostate masks when present)."""
    if case.adc is None:
        raise CaseError(f"Case {case.case_id} has no ADC map: automatic registration needs one "
                        "(give a transform file instead).")
    return register_images(case.t2, case.adc, case.zones, case.prostate, preset, starts, seed, workers, progress)


def score_case_transform(case: Case, transform: sitk.Transform, preset: str | RegistrationSettings = "paper",
                         source: str = "user") -> RegistrationResult:
    """Score a given transform (e.g. the user's) against the identity, without registering."""
    settings = _settings_for(preset, None)
    began = time.perf_counter()
    if case.adc is None:
        identity = chosen = Score(total=float("nan"))
        regions = ""
    else:
        problem = build_problem(case.t2, case.adc, case.zones, case.prostate, settings)
        identity = score_problem(problem, settings, identity_transform())
        chosen = score_problem(problem, settings, transform)
        regions = problem.regions.kind
    return RegistrationResult(transform=transform, identity_kept=False, chosen_start=None, chosen_score=chosen,
                              identity_score=identity, settings=settings, regions=regions,
                              timings={"total": time.perf_counter() - began}, source=source)


# --- applying and storing transforms ----------------------------------------------------

def apply_transform(image: sitk.Image, transform: sitk.Transform, reference: Optional[sitk.Image] = None,
                    interpolator: int = sitk.sitkBSpline) -> sitk.Image:
    """Resample `image` through the resampling `transform` onto `reference` (default: its own
    grid). Voxels that map outside the image become 0. Keeps the pixel type when it is float."""
    reference = reference if reference is not None else image
    pixel = image.GetPixelID() if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64) else sitk.sitkFloat32
    out = sitk.Resample(sitk.Cast(image, pixel), reference, transform, interpolator, 0.0, pixel)
    if interpolator == sitk.sitkBSpline:  # cubic overshoot would make negative ADC/DWI values
        out = sitk.Clamp(out, pixel, 0.0)
    return out


def apply_to_case(case: Case, transform: sitk.Transform) -> Case:
    """A copy of `case` with ADC and every DWI image (measured and computed) registered to T2."""
    return dataclasses.replace(
        case,
        adc=None if case.adc is None else apply_transform(case.adc, transform),
        dwi={b: apply_transform(img, transform) for b, img in case.dwi.items()},
        dwi_computed={b: apply_transform(img, transform) for b, img in case.dwi_computed.items()})


def write_transform(transform: sitk.Transform, path: str | Path) -> None:
    """Write an ITK transform file (.h5 / .tfm); 3D Slicer loads it as a transform node."""
    sitk.WriteTransform(transform, str(path))


def _flatten(transform: sitk.Transform) -> list[sitk.Transform]:
    if transform.GetTransformEnum() == sitk.sitkComposite:
        composite = sitk.CompositeTransform(transform)
        return [t for i in range(composite.GetNumberOfTransforms()) for t in _flatten(composite.GetNthTransform(i))]
    return [transform]


def read_transform(path: str | Path, reference: Optional[sitk.Image] = None) -> sitk.Transform:
    """Read a user's ITK transform (resampling direction, fixed T2 -> moving ADC/DWI) and check
    that it is invertible: linear parts must have a non-singular matrix, deformable parts a
    positive Jacobian determinant everywhere on `reference`'s grid (no folding)."""
    path = Path(path)
    if not path.is_file():
        raise CaseError(f"Transform file {path} does not exist.")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise CaseError(f"Transform file {path} cannot be read as an ITK transform "
                        f"({str(exc).strip().splitlines()[-1][:120]}).") from None
    if transform.GetDimension() != 3:
        raise CaseError(f"Transform file {path} holds a {transform.GetDimension()}D transform; a 3D one is needed.")
    for part in _flatten(transform):
        params = np.array(part.GetParameters() + part.GetFixedParameters(), float)
        if not np.all(np.isfinite(params)):
            raise CaseError(f"Transform file {path} contains non-finite parameters.")
        if part.IsLinear():
            matrix = np.array(_as_affine(part).GetMatrix()).reshape(3, 3)
            det = float(np.linalg.det(matrix))
            if not math.isfinite(det) or abs(det) < 1e-6:
                raise CaseError(f"Transform file {path} is not invertible (its linear part has determinant {det:.3g}).")
        elif reference is not None:
            _check_no_folding(part, reference, path)
    return transform


def _as_affine(linear: sitk.Transform) -> sitk.AffineTransform:
    """Matrix of any linear transform, via how it maps the unit vectors."""
    origin = np.array(linear.TransformPoint((0.0, 0.0, 0.0)))
    columns = [np.array(linear.TransformPoint(tuple(float(v) for v in e))) - origin for e in np.eye(3)]
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(np.stack(columns, axis=1).ravel().tolist())
    affine.SetTranslation(origin.tolist())
    return affine


def _check_no_folding(part: sitk.Transform, reference: sitk.Image, path: Path) -> None:
    """Jacobian determinant of the deformation on a coarse grid strictly inside `reference`
    (on the BSpline domain's border the displacement legitimately drops to zero)."""
    size = np.array(reference.GetSize(), float)
    coarse = [max(3, int(size[0]) // 4), max(3, int(size[1]) // 4), max(3, int(size[2]))]
    first, last = np.full(3, 0.5), size - 1.5  # continuous indices, half a voxel inside
    step = (last - first) / (np.array(coarse) - 1)
    origin = reference.TransformContinuousIndexToPhysicalPoint(first.tolist())
    spacing = (step * np.array(reference.GetSpacing())).tolist()
    field = sitk.TransformToDisplacementField(part, sitk.sitkVectorFloat64, coarse, origin, spacing,
                                              reference.GetDirection())
    # the outer layer is dropped: finite differences there see the domain's border
    jacobian = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field))[1:-1, 1:-1, 1:-1]
    if jacobian.size and float(jacobian.min()) <= 0.0:
        raise CaseError(f"Transform file {path} is not invertible (its deformation folds: Jacobian determinant "
                        f"{float(jacobian.min()):.3g} <= 0).")


def checkerboard(t2: sitk.Image, adc: sitk.Image, transform: sitk.Transform, slice_index: Optional[int] = None,
                 squares: int = 8) -> np.ndarray:
    """2D checkerboard (float array in [0, 1]) of T2 and ADC through `transform`: the central
    half of one T2 slice (default: the middle slice)."""
    z = t2.GetSize()[2] // 2 if slice_index is None else slice_index
    t2_slice = sitk.GetArrayFromImage(sitk.Cast(t2, sitk.sitkFloat32))[z]
    adc_slice = sitk.GetArrayFromImage(sitk.Resample(sitk.Cast(adc, sitk.sitkFloat32), t2, transform,
                                                     sitk.sitkLinear, 0.0, sitk.sitkFloat32))[z]

    def scale(a: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(a, [1, 99])
        return np.clip((a - lo) / (hi - lo or 1.0), 0, 1)

    # the central half in-plane: ProstateX acquisitions are centred on the prostate
    ny, nx = t2_slice.shape
    window = (slice(ny // 4, ny - ny // 4), slice(nx // 4, nx - nx // 4))
    t2_slice, adc_slice = scale(t2_slice[window]), scale(adc_slice[window])
    yy, xx = np.indices(t2_slice.shape)
    tile = max(1, t2_slice.shape[0] // squares)
    board = ((yy // tile) + (xx // tile)) % 2 == 0
    return np.where(board, t2_slice, adc_slice)
