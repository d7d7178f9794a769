"""One start of the multi-start BSpline registration, and running many of them in parallel
(main paper, Pre-processing, "Automated sequence registration": "the registration
algorithm was run 50 times with different parameter initializations").

Two methods. "multilevel" (presets paper and fast) is ours, described below. "released"
(preset released) follows the authors' code: see `released`, whose runs differ only in their
random metric sampling; `run_start` and `score_problem` hand such settings to it.

How starts differ (all derived from `(seed, start_index)`, so a run is reproducible):
- with `start_variants` (the paper preset) the starts cycle through metric variants: start i
  runs variant i % V from initialisation i // V (below), so each variant has its own identity
  start and the variants see the same initialisations; without them, initialisation i = start i;
- initialisation 0 is the identity (all BSpline coefficients zero), as plain registration would;
- every other one begins at a random translation t ~ N(0, sd_t) mm per axis plus
  independent N(0, sd_c) mm noise on each control point; only control points whose support
  reaches the working region are perturbed (the others receive no metric gradient and stay
  zero, which keeps the transform smooth and the identity far from the prostate);
- by default the metric uses every voxel of the working region (no random sampling), so the
  initialisation is the only thing that differs between starts. Settings can make a start
  cheaper (`metric_fraction`: random samples seeded from (seed, start, level);
  `metric_margin_mm`: only the gland plus a margin; `level_shrink`: coarser grids for the coarse
  levels; `convergence_window`: early stop; `whole_refinement`: a last whole-region pass after
  gland-masked levels); README's registration section has what they cost and gain.

Each start runs coarse to fine: Mattes MI between gradient images smoothed with 3, then 1.5,
then 1 mm, each level continuing the previous level's BSpline with a 4x smaller first step.

Every start runs single-threaded (ITK threads = 1), so a result does not depend on the
number of cores, and starts run in parallel in separate processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from ..cancellation import (cancelled, ignore_interrupt, quiet_signals, raise_if_cancelled,
                            start_quiet_resource_tracker, stop_processes)
from ..errors import ParameterError
from . import released
from .scoring import Score, ScoringRegions, score_transform


@dataclass(frozen=True)
class RegistrationSettings:
    """Parameters of one preset. Distances in mm."""

    name: str = "paper"
    starts: int = 50
    working_spacing_mm: Optional[tuple[float, float, float]] = (1.0, 1.0, 3.0)  # None: T2's own grid
    roi_margin_mm: float = 15.0  # around the prostate's bounding box
    central_roi_mm: tuple[float, float, float] = (80.0, 80.0, 72.0)  # without any mask (paper's crop size)
    moving_margin_mm: float = 25.0  # ADC crop margin around the working region
    # Gradient-image smoothing per level, coarse to fine: each level continues from the previous
    # level's transform with `iterations` more steps. The coarse level widens the capture range:
    # with 1 mm alone the descent drifted away on 2 of 4 phantoms with an 8 mm deformation
    # (phantoms 0-5, fast preset, 2 starts: mean TRE 4.99 -> 1.43 mm with these settings; a finer
    # BSpline mesh, 40 or 27 mm, was worse: more freedom, more drift).
    gradient_sigmas_mm: tuple[float, ...] = (3.0, 1.5, 1.0)
    score_sigma_mm: float = 0.75  # smoothing of the gradients correlated for the selection score
    histogram_bins: int = 32
    grid_spacing_mm: float = 60.0  # BSpline mesh cell size (control points every grid_spacing_mm)
    iterations: int = 15  # per level
    step_mm: float = 1.0  # first gradient step (largest control-point move), halved on overshoot
    # first step of pyramid level i: step_mm * level_step_factor ** i (a full 1 mm first step on the
    # fine level threw away what the coarse level had found)
    level_step_factor: float = 0.25
    min_step_mm: float = 0.01
    relaxation: float = 0.5
    init_translation_sd_mm: float = 2.0
    init_coefficient_sd_mm: float = 0.5
    # What one metric evaluation costs (multilevel method). `metric_fraction`: None = every voxel;
    # else that share of the fixed voxels, drawn at random once per level with a seed from
    # (seed, start, level), so a start is reproducible. `metric_margin_mm`: None = the whole
    # working region; else only the scoring regions (zones or prostate) dilated by that margin
    # (the whole region when no mask is known). `level_shrink`: in-plane shrink factor of the
    # fixed grid per level, coarse to fine (() = every level at the working spacing).
    metric_fraction: Optional[float] = None
    metric_margin_mm: Optional[float] = None
    metric_mask_levels: Optional[int] = None  # how many of the finest levels use that mask (None: all)
    level_shrink: tuple[int, ...] = ()
    # Early stop: a level ends once its loss improved by less than `convergence_tolerance`
    # (relative) over the last `convergence_window` iterations (0: every level runs `iterations`).
    convergence_window: int = 0
    convergence_tolerance: float = 1e-3
    # `whole_refinement`: None = none; else one more pass at the finest level over the whole
    # working region (no mask) after the levels, sampling that share of voxels at random (1.0:
    # every voxel), so that a gland-masked start also sees the deformation around the gland.
    whole_refinement: Optional[float] = None
    # Mixed multi-start: the starts cycle through these variants, each a tuple of (field, value)
    # overrides of the metric fields (VARIANT_FIELDS); start i runs variant i % V from the
    # initialisation of start i // V, so every variant starts from the same initialisations
    # (the first from the identity). () = every start runs these settings. All starts are scored
    # by the same selection score, so the best start wins whichever variant it ran.
    start_variants: tuple[tuple[tuple[str, object], ...], ...] = ()
    # "multilevel" (ours) or "released" (the authors' reg_lib.py). The released method reads only
    # starts, histogram_bins, grid_spacing_mm, iterations (per level) and the fields below.
    method: str = "multilevel"
    sampling_fraction: float = 0.1  # share of voxels the released method's metric samples at random
    learning_rate: float = 200.0  # plain gradient descent (released)
    shrink_factors: tuple[int, ...] = (4, 2)  # pyramid (released)
    smoothing_sigmas_mm: tuple[float, ...] = (2.0, 1.0)
    mesh_scale_factors: tuple[int, ...] = (1, 2)  # BSpline mesh refinement per level (released)
    mesh_divisor: int = 4  # first mesh: round(extent / grid_spacing_mm) cells / mesh_divisor (released)
    score_weights: tuple[tuple[str, float], ...] = (("PZ", 1.5), ("CG", 0.75))  # released score
    loss_weight: float = 0.5  # released score: + loss_weight * MI

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out["start_variants"] = [dict(v) for v in self.start_variants]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def variant_count(self) -> int:
        return max(1, len(self.start_variants))

    def variant(self, index: int) -> "RegistrationSettings":
        """The settings variant `index` runs (these settings when there are no variants)."""
        if not self.start_variants:
            return self
        return dataclasses.replace(self, start_variants=(), **dict(self.start_variants[index]))


# What a start variant may change: what the metric sees and costs (not the transform's mesh,
# the pyramid or the score, so every variant's result is comparable by the same score).
VARIANT_FIELDS = ("metric_fraction", "metric_margin_mm", "metric_mask_levels", "whole_refinement")


def check_variants(settings: RegistrationSettings) -> None:
    """Refuse variants that change anything but the metric fields, or a released-method mix."""
    if not settings.start_variants:
        return
    if settings.method != "multilevel":
        raise ParameterError(f"Start variants need the multilevel method (preset '{settings.name}' uses "
                             f"'{settings.method}').")
    for variant in settings.start_variants:
        bad = [name for name, _ in variant if name not in VARIANT_FIELDS]
        if bad:
            raise ParameterError(f"A start variant may only change {', '.join(VARIANT_FIELDS)} "
                                 f"(got {', '.join(map(str, bad))}).")


# The two metric variants of the default's mixed multi-start: 10% random samples over the zones
# + 10 mm (what lifts ProstateX-0000 and -0218 above the authors' transforms) and 10% over the
# whole working region (what keeps the phantom TRE: the deformation around the gland is seen).
GLAND_10MM = (("metric_fraction", 0.1), ("metric_margin_mm", 10.0))
WHOLE_REGION = (("metric_fraction", 0.1), ("metric_margin_mm", None))

PRESETS: dict[str, RegistrationSettings] = {
    # The paper's protocol: 50 starts, 1 mm working grid around the prostate; the starts alternate
    # the two variants above (25 each, from the same 25 initialisations) and the paper's selection
    # score picks the best of all 50 (README, "Register ADC/DWI to T2": measured 2026-12-01).
    "paper": RegistrationSettings(start_variants=(GLAND_10MM, WHOLE_REGION)),
    # Interactive use (Slicer panel): the paper preset's mixed multi-start with 8 starts (4 per
    # variant). Against the former fast preset (8 starts, every voxel of a 1.5 mm grid) it scored
    # higher on both studies and on phantom TRE for a fifth of the CPU (README, "Register ADC/DWI
    # to T2": 1.5 mm grid and 12-start variants were measured too).
    "fast": RegistrationSettings(name="fast", starts=8, start_variants=(GLAND_10MM, WHOLE_REGION)),
    # The authors' released code (reg_lib.py `register_spline` and `Registration example.ipynb`,
    # RUNS = 50): the registration the published model's inputs went through; see `released`.
    "released": RegistrationSettings(name="released", starts=50, method="released", histogram_bins=100,
                                     grid_spacing_mm=20.0, iterations=50),
}


@dataclass
class RegistrationProblem:
    """Everything a start needs (picklable: sent once to every worker process)."""

    fixed_features: sitk.Image  # T2 gradient magnitude on the working grid (score smoothing)
    fixed_features_mi: sitk.Image  # same at the finest level's sigma, clipped/normalised for Mattes MI
    moving_image: sitk.Image  # ADC crop, raw (scored after resampling, as the paper does)
    moving_features_mi: sitk.Image  # ADC gradient magnitude at the finest level, clipped/normalised
    domain: sitk.Image  # image whose physical extent is the BSpline domain (T2, small copy)
    regions: ScoringRegions
    # what the optimiser sees, coarse to fine: (fixed, moving, fixed mask or None) per level
    levels_mi: list[tuple[sitk.Image, sitk.Image, Optional[sitk.Image]]] = field(default_factory=list)
    # the same per start variant (settings.start_variants; the images are shared, only the masks
    # differ); empty without variants
    variant_levels: list[list[tuple[sitk.Image, sitk.Image, Optional[sitk.Image]]]] = field(default_factory=list)


@dataclass
class StartResult:
    index: int
    transform: Optional[sitk.Transform]
    score: Optional[Score]
    final_loss: Optional[float]  # optimizer's last Mattes value (its own random samples)
    iterations: int
    stop_condition: str
    seconds: float  # wall time of this start
    initial_translation_mm: list[float] = field(default_factory=list)
    error: str = ""
    loss_trace: list[float] = field(default_factory=list)  # optimizer's Mattes value per iteration
    cpu_seconds: float = 0.0  # CPU time of this start (its process, single-threaded)
    variant: int = 0  # which of settings.start_variants this start ran (0 without variants)

    def as_dict(self) -> dict:
        return {"start": self.index, "score": self.score.as_dict() if self.score else None,
                "final_loss": None if self.final_loss is None else round(self.final_loss, 6),
                "iterations": self.iterations, "stop_condition": self.stop_condition,
                "seconds": round(self.seconds, 3), "cpu_seconds": round(self.cpu_seconds, 3),
                "initial_translation_mm": [round(v, 3) for v in self.initial_translation_mm],
                "first_loss": round(self.loss_trace[0], 6) if self.loss_trace else None,
                "variant": self.variant, "error": self.error}


def mesh_size(domain: sitk.Image, settings: RegistrationSettings) -> list[int]:
    """BSpline mesh over the domain: cells of about `grid_spacing_mm`."""
    extent = [n * s for n, s in zip(domain.GetSize(), domain.GetSpacing())]
    return [max(1, int(round(e / settings.grid_spacing_mm))) for e in extent]


def initial_bspline(problem: RegistrationProblem, settings: RegistrationSettings, start_index: int,
                    seed: int) -> tuple[sitk.BSplineTransform, list[float]]:
    """The BSpline a start begins from (see module docstring), and its random translation."""
    transform = sitk.BSplineTransformInitializer(problem.domain, mesh_size(problem.domain, settings), order=3)
    if start_index == 0:
        return transform, [0.0, 0.0, 0.0]
    rng = np.random.default_rng([int(seed), int(start_index)])
    translation = rng.normal(0.0, settings.init_translation_sd_mm, 3)
    coefficient_images = transform.GetCoefficientImages()
    reach = _control_points_reaching(coefficient_images[0], problem.fixed_features)
    params = []
    for axis, coeff in enumerate(coefficient_images):
        values = translation[axis] + rng.normal(0.0, settings.init_coefficient_sd_mm, reach.shape)
        params.append(np.where(reach, values, 0.0))
    # Parameter order of an ITK BSpline: axis-major, then x fastest within each image.
    flat = np.concatenate([p.ravel() for p in params])  # arrays are (z, y, x): x fastest
    transform.SetParameters(flat.tolist())
    return transform, translation.tolist()


def _control_points_reaching(coefficients: sitk.Image, region: sitk.Image) -> np.ndarray:
    """(z, y, x) mask of control points whose cubic support (±2 spacings) meets `region`."""
    size = np.array(coefficients.GetSize())
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3)
    direction = np.array(coefficients.GetDirection()).reshape(3, 3)
    physical = np.array(coefficients.GetOrigin()) + (idx * np.array(coefficients.GetSpacing())) @ direction.T
    r_dir = np.array(region.GetDirection()).reshape(3, 3)
    r_idx = ((physical - np.array(region.GetOrigin())) @ r_dir) / np.array(region.GetSpacing())
    support = 2.0 * np.array(coefficients.GetSpacing()).max() / np.array(region.GetSpacing())
    inside = np.all((r_idx >= -0.5 - support) & (r_idx <= np.array(region.GetSize()) - 0.5 + support), axis=1)
    return inside.reshape(tuple(size)).transpose(2, 1, 0)


def run_start(problem: RegistrationProblem | released.ReleasedProblem, settings: RegistrationSettings,
              start_index: int, seed: int) -> StartResult:
    """Register the gradient images from one initialisation and score the result."""
    if settings.method == "released":
        return _run_released_start(problem, settings, start_index, seed)
    began, cpu_began = time.perf_counter(), time.process_time()
    variant = start_index % settings.variant_count()
    own = settings.variant(variant)  # the metric settings this start runs
    transform, translation = initial_bspline(problem, settings, start_index // settings.variant_count(), seed)
    trace: list[float] = []
    levels = (problem.variant_levels[variant] if settings.start_variants else problem.levels_mi) or \
        [(problem.fixed_features_mi, problem.moving_features_mi, None)]
    passes = [(fixed, moving, mask, own.metric_fraction) for fixed, moving, mask in levels]
    if own.whole_refinement is not None:  # the finest level once more, over the whole working region
        passes.append((levels[-1][0], levels[-1][1], None, None if own.whole_refinement >= 1.0
                       else own.whole_refinement))
    try:
        for level, (fixed, moving, mask, fraction) in enumerate(passes):
            # the refinement pass steps as the finest level does
            step = settings.step_mm * settings.level_step_factor ** min(level, len(levels) - 1)
            method = _level_method(settings, step, transform, trace)
            if mask is not None:
                method.SetMetricFixedMask(mask)
            if fraction is not None:
                method.SetMetricSamplingStrategy(method.RANDOM)
                method.SetMetricSamplingPercentage(float(fraction), _sampling_seed(seed, start_index, level))
            with quiet_signals():  # ITK would print and drop the exception raised in its callback
                method.Execute(fixed, moving)
            raise_if_cancelled()
    except RuntimeError as exc:  # e.g. too few samples mapped inside the moving image
        return StartResult(start_index, None, None, None, len(trace), "failed", time.perf_counter() - began,
                           translation, error=str(exc).strip().splitlines()[-1][:300], loss_trace=trace,
                           cpu_seconds=time.process_time() - cpu_began, variant=variant)
    final = sitk.BSplineTransform(transform)
    score = score_problem(problem, settings, final)
    return StartResult(start_index, final, score, float(method.GetMetricValue()), len(trace),
                       method.GetOptimizerStopConditionDescription(), time.perf_counter() - began, translation,
                       loss_trace=trace, cpu_seconds=time.process_time() - cpu_began, variant=variant)


def _run_released_start(problem: released.ReleasedProblem, settings: RegistrationSettings, start_index: int,
                        seed: int) -> StartResult:
    began, cpu_began = time.perf_counter(), time.process_time()
    try:
        transform, loss, iterations, stop, trace = released.register_once(problem, settings, start_index, seed)
    except RuntimeError as exc:  # e.g. too few samples mapped inside the moving image
        return StartResult(start_index, None, None, None, 0, "failed", time.perf_counter() - began, [0.0, 0.0, 0.0],
                           error=str(exc).strip().splitlines()[-1][:300], cpu_seconds=time.process_time() - cpu_began)
    return StartResult(start_index, transform, released.score(problem, settings, transform), loss, iterations, stop,
                       time.perf_counter() - began, [0.0, 0.0, 0.0], loss_trace=trace,
                       cpu_seconds=time.process_time() - cpu_began)


def _sampling_seed(seed: int, start_index: int, level: int) -> int:
    """ITK's sampling seed for one level of one start (never 0: ITK reads 0 as "wall clock")."""
    return int(np.random.default_rng([int(seed), int(start_index), int(level)]).integers(1, 2 ** 31 - 1))


def _level_method(settings: RegistrationSettings, step_mm: float, transform: sitk.BSplineTransform,
                  trace: list[float]) -> sitk.ImageRegistrationMethod:
    """The registration of one pyramid level, continuing `transform` in place."""
    method = sitk.ImageRegistrationMethod()
    method.SetNumberOfThreads(1)
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    # Every voxel by default: ITK's random sampling made the descent drift on phantoms (the
    # metric got worse step after step); `metric_fraction` asks for random samples (`run_start`).
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    # Gradient descent with a regular step along the normalised gradient, halved whenever the
    # direction reverses: plain fixed-rate descent needs a learning rate tuned per image (the
    # authors used 200 on their normalised crops) and ITK's estimated rate overshot on ours.
    # BSpline parameters are displacements in mm, so unit scales are the physical ones.
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=step_mm, minStep=settings.min_step_mm,
                                                    numberOfIterations=settings.iterations,
                                                    relaxationFactor=settings.relaxation)
    # One level, and SetInitialTransform rather than SetInitialTransformAsBSpline: the latter's
    # mesh adaptor would shrink the BSpline domain to the working region, making the
    # displacement jump to zero at its border; we keep T2's whole field of view.
    method.SetShrinkFactorsPerLevel([1])
    method.SetSmoothingSigmasPerLevel([0.0])
    method.SetInitialTransform(transform, inPlace=True)
    first = len(trace)
    window = settings.convergence_window

    def on_iteration() -> None:
        trace.append(method.GetMetricValue())
        if cancelled():  # a signal came during Execute (in this process: --workers 1): stop at once
            method.StopRegistration()
            return
        level_trace = trace[first:]
        if window and len(level_trace) > window:
            before, now = level_trace[-1 - window], level_trace[-1]
            if before - now < settings.convergence_tolerance * abs(before):  # the loss falls as MI rises
                method.StopRegistration()

    method.AddCommand(sitk.sitkIterationEvent, on_iteration)
    return method


def score_problem(problem: RegistrationProblem | released.ReleasedProblem, settings: RegistrationSettings,
                  transform: sitk.Transform) -> Score:
    """The selection score of `transform` on this problem (`scoring`, or `released.score`)."""
    if settings.method == "released":
        return released.score(problem, settings, transform)
    return score_transform(transform, fixed_features=problem.fixed_features,
                           fixed_features_mi=problem.fixed_features_mi, moving_image=problem.moving_image,
                           moving_features_mi=problem.moving_features_mi, regions=problem.regions,
                           sigma_mm=settings.score_sigma_mm, bins=settings.histogram_bins)


# --- parallel execution -------------------------------------------------------------

_WORKER_STATE: dict = {}


def _init_worker(problem: RegistrationProblem, settings: RegistrationSettings, seed: int) -> None:
    ignore_interrupt()  # Ctrl-C reaches the whole terminal group: the parent stops the workers
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    _WORKER_STATE.update(problem=problem, settings=settings, seed=seed)


def _worker_start(start_index: int) -> StartResult:
    return run_start(_WORKER_STATE["problem"], _WORKER_STATE["settings"], start_index, _WORKER_STATE["seed"])


def default_workers(starts: int) -> int:
    """Processes to use: the cores this process may run on, never more than the starts."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, starts))


def run_starts(problem: RegistrationProblem, settings: RegistrationSettings, starts: int, seed: int,
               workers: Optional[int] = None,
               on_done: Optional[Callable[[StartResult, int], None]] = None) -> list[StartResult]:
    """Run starts 0..starts-1, in `workers` processes (1 = in this process); results by index."""
    workers = default_workers(starts) if workers is None else max(1, min(int(workers), starts))
    results: list[StartResult] = []
    if workers == 1:
        previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        try:
            for i in range(starts):
                results.append(run_start(problem, settings, i, seed))
                raise_if_cancelled()
                if on_done:
                    on_done(results[-1], len(results))
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)
    else:
        # spawn, not fork: ITK's thread pool does not survive a fork safely.
        start_quiet_resource_tracker()
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                      initializer=_init_worker, initargs=(problem, settings, seed))
        try:
            futures = [pool.submit(_worker_start, i) for i in range(starts)]
            for future in cf.as_completed(futures):
                results.append(future.result())
                if on_done:
                    on_done(results[-1], len(results))
        except BaseException:
            _stop_pool(pool)  # cancelled or failed: the queued starts must not run on
            raise
        pool.shutdown(wait=True)
    return sorted(results, key=lambda r: r.index)


def _stop_pool(pool: cf.ProcessPoolExecutor) -> None:
    """Drop the queued starts and end the running ones now (a plain shutdown would wait for all)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    stop_processes(processes)
    pool.shutdown(wait=True)
