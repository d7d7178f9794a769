"""The authors' released registration, as the preset "released" (the inputs of the published
model were registered this way).

Follows the authors' code (OscarPellicer/prostate_lesion_detection, commit 51bd300):
`reg_lib.py` (`register_spline`, `get_gradient_features`, `evaluate_registration`) and the
loop of `Registration example.ipynb`; re-implemented here, not copied.

Inputs, as their pre-processed crop: T2 and the ADC resampled onto the T2 grid (ADC
negatives set to 0, Gaussian blur of variance 2 mm² when its 40th percentile is 0), each
normalised over the whole T2-grid volume ((v - p1) / (p99 - p1)), then cropped to
160×160×24 voxels at 0.5×0.5×3 mm around the prostate centroid (`preprocessing.crop_geometry`,
the crop the detector uses; the field-of-view centre without a mask).

Features: the signed derivative image of each crop, the mean of its derivatives along the
column and row axes (their `get_gradient_features`; in the T2 axes, as their frame has an
identity direction), with the ADC's negated.

One run (`register_once`): a cubic BSpline over the crop with a mesh of round(extent / 20 mm)
cells divided by 4 (1×1×1 on their crop), refined ×1 then ×2 by SimpleITK's BSpline adaptor;
Mattes mutual information with 100 bins on 10% random samples; shrink factors 4, 2 with
smoothing 2, 1 mm; plain gradient descent, learning rate 200, 50 iterations per level, no
learning-rate estimation (their `SetOptimizerAsGradientDescent`, not the regular-step descent
of the other presets). The only thing that differs
between their 50 runs is the random metric sampling; here its seed comes from
(seed, start index), so a run is reproducible.

Score of a candidate (`score`): their notebook keeps the run with the lowest
mean(1.5·CC_PZ', 0.75·CC_CG') + loss/2, where CC' correlates the T2 features with the
*negated* ADC features of the registered ADC and loss is the Mattes value (= -MI). With the
negation undone that is the highest

    total = mean(1.5·CC_PZ, 0.75·CC_CG) + MI/2,

which is what this module computes (with only a prostate or a central region: 1.125·CC, the
mean of the two weights, so that equal correlations score as with zones). Their loss is the
optimiser's last value on its own random samples; to compare runs with each other and with
the identity (which the never-worse guard needs) it is re-evaluated here on every voxel of the
last level (features smoothed by 1 mm, the fixed grid shrunk by 2).

The transform: their BSpline lives on the crop only (zero displacement outside, a jump at its
border). `extend_domain` adds three empty cells on every side: inside the crop the
displacement is unchanged, outside it falls smoothly to zero, so the transform can be applied
to whole ADC/DWI images and passes `read_transform`'s folding check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..cancellation import cancelled, quiet_signals, raise_if_cancelled
from ..errors import CaseError
from ..preprocessing.crop_geometry import CropGeometry, Grid
from ..preprocessing.preprocess import fov_center_lps, mask_centroid_lps
from .scoring import Score, ScoringRegions, correlation, mattes_loss, scoring_regions

EXTRA_CELLS = 3  # a cubic B-spline's support is 4 cells: 3 empty cells bring the displacement to 0


@dataclass
class ReleasedProblem:
    """What every run needs (picklable: sent once to every worker process)."""

    fixed_features: sitk.Image  # T2 derivative features on the crop: the registration's fixed image
    moving_features: sitk.Image  # negated ADC derivative features on the crop: the moving image
    moving_image: sitk.Image  # normalised ADC crop, re-featured after resampling for the score
    loss_fixed: sitk.Image  # fixed features as the last level sees them (smoothed, shrunk)
    loss_moving: sitk.Image  # moving features smoothed as at the last level
    regions: ScoringRegions
    center_source: str  # where the crop is centred: "prostate mask", "zones mask" or "field of view"


def derivative_features(image: sitk.Image) -> sitk.Image:
    """Mean of the derivatives along the column and row axes (mm⁻¹, float32), signed."""
    gradient = sitk.GradientImageFilter()
    gradient.SetUseImageSpacing(True)
    gradient.SetUseImageDirection(False)  # along the image axes, as in their identity-direction frame
    vector = gradient.Execute(sitk.Cast(image, sitk.sitkFloat32))
    mean = 0.5 * (sitk.VectorIndexSelectionCast(vector, 0, sitk.sitkFloat32)
                  + sitk.VectorIndexSelectionCast(vector, 1, sitk.sitkFloat32))
    return sitk.Cast(mean, sitk.sitkFloat32)


def _normalised(image: sitk.Image) -> sitk.Image:
    """(v - p1) / (p99 - p1 + 1e-6) over the whole image, after lifting a negative minimum to 0."""
    arr = sitk.GetArrayFromImage(image).astype(np.float64)
    if arr.min() < 0:
        arr = arr - arr.min()
    p1, p99 = np.percentile(arr, [1.0, 99.0])
    out = sitk.GetImageFromArray(((arr - p1) / (p99 - p1 + 1e-6)).astype(np.float32))
    out.CopyInformation(image)
    return out


def _adc_on_t2(adc: sitk.Image, t2: sitk.Image) -> sitk.Image:
    """The ADC on the T2 grid as their pre-processing prepares it (B-spline, negatives to 0,
    blurred with variance 2 mm² when its 40th percentile is 0)."""
    on_t2 = sitk.Resample(sitk.Cast(adc, sitk.sitkFloat32), t2, sitk.Transform(), sitk.sitkBSpline, 0.0,
                          sitk.sitkFloat32)
    on_t2 = sitk.Clamp(on_t2, sitk.sitkFloat32, 0.0)
    if float(np.percentile(sitk.GetArrayViewFromImage(on_t2), 40.0)) == 0.0:
        on_t2 = sitk.DiscreteGaussian(on_t2, variance=2.0, maximumKernelWidth=16, useImageSpacing=True)
    return on_t2


def _crop(image: sitk.Image, geometry: CropGeometry) -> sitk.Image:
    return sitk.Resample(image, geometry.crop.image(), sitk.Transform(), sitk.sitkBSpline, 0.0, sitk.sitkFloat32)


def crop_geometry(t2: sitk.Image, zones: Optional[sitk.Image], prostate: Optional[sitk.Image]) -> CropGeometry:
    """The detector's crop around the prostate centroid (field-of-view centre without a mask)."""
    for mask, what, source in ((prostate, "prostate", "prostate mask"), (zones, "zonal", "zones mask")):
        if mask is not None and sitk.GetArrayViewFromImage(mask).any():
            return CropGeometry.around(Grid.of(t2), mask_centroid_lps(mask, what), source)
    return CropGeometry.around(Grid.of(t2), fov_center_lps(t2), "field of view")


def build_problem(t2: sitk.Image, adc: sitk.Image, zones: Optional[sitk.Image], prostate: Optional[sitk.Image],
                  settings) -> ReleasedProblem:
    geometry = crop_geometry(t2, zones, prostate)
    ones = sitk.Image(adc.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(adc)
    covered = sitk.Resample(ones, geometry.crop.image(sitk.sitkUInt8), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    if sitk.GetArrayViewFromImage(covered).mean() < 0.25:
        raise CaseError("The ADC image covers less than a quarter of the T2 region around the prostate "
                        "(images do not overlap; check that both series belong to the same study).")
    t2_crop = _crop(_normalised(sitk.Cast(t2, sitk.sitkFloat32)), geometry)
    adc_crop = _crop(_normalised(_adc_on_t2(adc, t2)), geometry)
    fixed = derivative_features(t2_crop)
    moving = sitk.Cast(-derivative_features(adc_crop), sitk.sitkFloat32)
    last_sigma, last_shrink = settings.smoothing_sigmas_mm[-1], settings.shrink_factors[-1]

    def smoothed(image: sitk.Image) -> sitk.Image:
        return sitk.DiscreteGaussian(image, variance=float(last_sigma) ** 2, useImageSpacing=True)

    return ReleasedProblem(fixed_features=fixed, moving_features=moving, moving_image=adc_crop,
                           loss_fixed=sitk.Shrink(smoothed(fixed), [int(last_shrink)] * 3),
                           loss_moving=smoothed(moving),
                           regions=scoring_regions(fixed, zones, prostate), center_source=geometry.center_source)


def mesh_size(image: sitk.Image, settings) -> list[int]:
    """round(extent / grid spacing) cells per axis, divided by `mesh_divisor` (rounded, at least 1)."""
    cells = [int(n * s / settings.grid_spacing_mm + 0.5) for n, s in zip(image.GetSize(), image.GetSpacing())]
    return [max(1, int(c / settings.mesh_divisor + 0.5)) for c in cells]


def sampling_seed(seed: int, start_index: int) -> int:
    """The metric's random-sampling seed of one run (never 0: SimpleITK reads 0 as 'wall clock')."""
    return int(np.random.SeedSequence([int(seed), int(start_index)]).generate_state(1)[0]) | 1


def register_once(problem: ReleasedProblem, settings, start_index: int, seed: int
                  ) -> tuple[sitk.BSplineTransform, float, int, str, list[float]]:
    """One run of their BSpline registration: (transform with its domain extended, final
    optimiser loss, iterations, stop condition, loss per iteration)."""
    transform = sitk.BSplineTransformInitializer(problem.fixed_features, mesh_size(problem.fixed_features, settings),
                                                 order=3)
    method = sitk.ImageRegistrationMethod()
    method.SetNumberOfThreads(1)
    method.SetInitialTransformAsBSpline(transform, inPlace=True,
                                        scaleFactors=[int(f) for f in settings.mesh_scale_factors])
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(settings.sampling_fraction, sampling_seed(seed, start_index))
    method.SetShrinkFactorsPerLevel([int(f) for f in settings.shrink_factors])
    method.SetSmoothingSigmasPerLevel([float(s) for s in settings.smoothing_sigmas_mm])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsGradientDescent(learningRate=settings.learning_rate, numberOfIterations=settings.iterations,
                                         estimateLearningRate=method.Never)
    trace: list[float] = []

    def on_iteration() -> None:
        trace.append(method.GetMetricValue())
        if cancelled():  # a signal came during Execute (in this process: --workers 1): stop at once
            method.StopRegistration()

    method.AddCommand(sitk.sitkIterationEvent, on_iteration)
    with quiet_signals():  # ITK would print and drop the exception raised in its callback
        method.Execute(problem.fixed_features, problem.moving_features)
    raise_if_cancelled()
    return (extend_domain(sitk.BSplineTransform(transform)), float(method.GetMetricValue()), len(trace),
            method.GetOptimizerStopConditionDescription(), trace)


def extend_domain(transform: sitk.BSplineTransform, cells: int = EXTRA_CELLS) -> sitk.BSplineTransform:
    """The same cubic BSpline on a domain `cells` mesh cells larger on every side, the new control
    points zero: identical displacement on the old domain, falling smoothly to 0 outside it."""
    mesh = np.array(transform.GetTransformDomainMeshSize(), int)
    physical = np.array(transform.GetTransformDomainPhysicalDimensions(), float)
    direction = np.array(transform.GetTransformDomainDirection(), float).reshape(3, 3)
    cell = physical / mesh
    out = sitk.BSplineTransform(3, transform.GetOrder())
    out.SetTransformDomainDirection(transform.GetTransformDomainDirection())
    out.SetTransformDomainOrigin(tuple(np.array(transform.GetTransformDomainOrigin()) - direction @ (cells * cell)))
    out.SetTransformDomainPhysicalDimensions(tuple(physical + 2 * cells * cell))
    out.SetTransformDomainMeshSize([int(m + 2 * cells) for m in mesh])
    params = []
    for coefficients in transform.GetCoefficientImages():  # (z, y, x) arrays, x fastest in the parameters
        old = sitk.GetArrayFromImage(coefficients)
        new = np.zeros(tuple(n + 2 * cells for n in old.shape))
        new[cells:-cells, cells:-cells, cells:-cells] = old
        params.append(new.ravel())
    out.SetParameters(np.concatenate(params).tolist())
    return out


def score(problem: ReleasedProblem, settings, transform: sitk.Transform) -> Score:
    """Their selection score (module docstring): mean of the weighted regional correlations of
    the derivative features, plus half the mutual information."""
    registered = sitk.Resample(problem.moving_image, problem.fixed_features, transform, sitk.sitkLinear, 0.0,
                               sitk.sitkFloat32)
    moved = sitk.GetArrayFromImage(derivative_features(registered))
    fixed = sitk.GetArrayViewFromImage(problem.fixed_features)
    ccs = {name: correlation(fixed[mask], moved[mask]) for name, mask in zip(problem.regions.names,
                                                                              problem.regions.masks)}
    weights = dict(settings.score_weights)
    single = float(np.mean(list(weights.values())))
    weighted = [weights.get(name, single) * cc for name, cc in ccs.items()]
    mi = -mattes_loss(problem.loss_fixed, problem.loss_moving, transform, settings.histogram_bins)
    return Score(total=float(np.mean(weighted)) + settings.loss_weight * mi, correlations=ccs, mutual_information=mi)
