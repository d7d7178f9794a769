"""The detection pipeline of one loaded case, the same for `prostate-cad detect`, the demo,
the accuracy measurement and the bench:

    zones -> ADC/DWI registration -> pre-processing -> detection -> outputs

- zones: the given zonal map, else the case's own; a detector that takes the zones as input
  channels (Retina U-Net) gets them from `zones.segment.segment_zones` when there are none,
  and then the segmented gland is the prostate mask too;
- registration: a given transform (T2 point -> ADC/DWI point) is used as it is; otherwise a
  detector that registers (Retina U-Net) runs `registration.register_case`, scored in the
  zones of the first stage (register_preset=None: ADC/DWI as acquired);
- pre-processing: the detector's own (the paper's 11 channels, or FocalNet's T2 + ADC
  slices); the transform is applied there to the original ADC/DWI, so they are
  interpolated once;
- detection: the detector chosen by the package's task (DETECTORS);
- outputs: `detection.outputs.write_detection_outputs` (detections.json and
  lesion-probability.nrrd, staged).

Voxel order: every network and the detector's crop see the images in the canonical voxel
order (orientation.py; the zones, the pre-processing and FocalNet reorient at their entry,
registration is given the reoriented case here), and every output is on the user's T2 grid
or in LPS, so a study written with flipped or permuted axes gives the same results.

`run_pipeline` runs every stage and returns a `PipelineResult` with the detections and the
intermediate products, so callers can write more files from them. `Pipeline` runs the same
stages one at a time for callers that work between stages (the demo writes each stage's
files); a stage runs the earlier ones that have not run yet.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import SimpleITK as sitk

from .detection.outputs import DetectorOutput, probability_on_t2, write_detection_outputs
from .errors import ModelError, ParameterError
from .formats import DetectionCase
from .models.package import ModelPackage, find_model
from .orientation import canonical_case
from .progress import ProgressCallback, silent, sub_progress
from .study.case import Case
from .zones import ANTERIOR_BAND, PZ_SHELL_MM

STAGES = ("zones", "registration", "preprocessing", "detection", "outputs")
# share of the progress bar per stage in run_pipeline
STAGE_SHARES = {"zones": (0.0, 0.15), "registration": (0.15, 0.35), "preprocessing": (0.35, 0.45),
                "detection": (0.45, 0.95), "outputs": (0.95, 1.0)}


@dataclass(frozen=True)
class DetectorKind:
    """How the pipeline runs the packages of one task. A new detector is a subpackage of
    `detection/` returning a `DetectorOutput`, plus one entry in DETECTORS."""

    task: str
    needs_zones: bool  # the zonal masks are input channels: segment them when the case has none
    registers: bool  # register ADC/DWI to T2 automatically when no transform is given
    load: Callable[[ModelPackage, str], Any]  # (package, device) -> loaded detector
    prepare: Callable[..., Any]  # (detector, case, prostate, zones, transform, progress) -> model input
    detect: Callable[..., DetectorOutput]  # (detector, model input, pipeline, progress) -> output
    check: Callable[[Sequence[str]], None] = lambda drop: None  # refuse bad options before any work


def _retina_load(pkg: ModelPackage, device: str):
    from .detection.retina_unet.inference import RetinaUNetDetector
    return RetinaUNetDetector(pkg, device)


def _retina_prepare(detector, case: Case, prostate, zones, transform, progress):
    from .preprocessing.preprocess import preprocess
    # the published package asks for the released code's ADC blur; the demo packages were trained without it
    blur = bool((detector.pkg.card.get("preprocessing") or {}).get("released_adc_blur", False))
    return preprocess(case, prostate, zones, dwi_adc_transform=transform, progress=progress, released_adc_blur=blur)


def _retina_detect(detector, prep, pipeline: "Pipeline", progress) -> DetectorOutput:
    from .detection.retina_unet.detect import detect_preprocessed
    from .detection.retina_unet.inference import DetectorWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DetectorWarning)  # reported through the output's messages
        return detect_preprocessed(prep, detector.pkg, detector=detector, drop=pipeline.drop, tta=pipeline.tta,
                                   progress=progress)


def _retina_check(drop: Sequence[str]) -> None:
    from .detection.retina_unet.inference import expand_drop
    expand_drop(drop)


def _focalnet_load(pkg: ModelPackage, device: str):
    from .detection.focalnet.inference import FocalNetModel
    return FocalNetModel.from_package(pkg)


def _focalnet_prepare(model, case: Case, prostate, zones, transform, progress):
    progress(0.0, "FocalNet: T2 and ADC slices")
    return model.prepare(case, prostate, transform)


def _focalnet_detect(model, stack, pipeline: "Pipeline", progress) -> DetectorOutput:
    from .detection.focalnet.inference import detect_stack
    return detect_stack(model, stack, pipeline.device, progress=progress, all_candidates=pipeline.all_candidates)


# Retina U-Net (Pellicer-Valero et al. 2022): zones are channels, non-rigid ADC/DWI registration.
# FocalNet (Cao et al. 2019): T2 + ADC through the scanner coordinates (its paper registers no
# further); a prostate mask only centres its crop.
DETECTORS: dict[str, DetectorKind] = {
    "detector": DetectorKind("detector", True, True, _retina_load, _retina_prepare, _retina_detect, _retina_check),
    "focalnet": DetectorKind("focalnet", False, False, _focalnet_load, _focalnet_prepare, _focalnet_detect),
}


def detector_package(name_or_path: str) -> ModelPackage:
    """A detector package (installed name or folder), checksums verified; a package of
    another task (e.g. a zones model) is refused."""
    pkg = find_model(name_or_path, verify=False)
    check_options(pkg)
    return find_model(name_or_path, task=pkg.task)


def check_options(pkg: ModelPackage, drop: Sequence[str] = (), register_preset: Optional[str] = "paper",
                  zones_backend: str = "taps") -> DetectorKind:
    """Refuse bad options before any work; returns how the package is run."""
    from .registration.multistart import PRESETS
    from .zones import BACKENDS

    kind = DETECTORS.get(pkg.task)
    if kind is None:
        raise ModelError(f"Model '{pkg.name}' is a {pkg.task!r} model, not a detector "
                         f"(tasks: {', '.join(DETECTORS)}).")
    if register_preset is not None and register_preset not in PRESETS:
        raise ParameterError(f"Unknown registration preset '{register_preset}' (choose from {', '.join(PRESETS)}).")
    if zones_backend not in BACKENDS:
        raise ParameterError(f"--zones-backend must be one of {', '.join(BACKENDS)}, got {zones_backend!r}.")
    kind.check(drop)
    return kind


def load_detector(pkg: ModelPackage, device: str = "auto"):
    """The package's detector, loaded once, to pass to several pipelines (`detector=`)."""
    return check_options(pkg).load(pkg, device)


@dataclass
class PipelineResult:
    """Everything one pipeline run produced; the fields fill in stage by stage."""

    case: Case
    model: ModelPackage
    zones: Optional[sitk.Image] = None  # 1 = CG, 2 = PZ (given, the case's or segmented)
    prostate: Optional[sitk.Image] = None
    zones_result: Any = None  # zones.segment.ZonesResult when the pipeline segmented the zones
    transform: Optional[sitk.Transform] = None  # T2 point -> ADC/DWI point; None: ADC/DWI as acquired
    registration: Any = None  # registration.RegistrationResult when the pipeline registered
    preprocessed: Any = None  # the detector's input: preprocessing.Preprocessed or FocalNet's SliceStack
    detector_output: Optional[DetectorOutput] = None  # probability map on the detector's grid
    detections: Optional[DetectionCase] = None
    probability: Optional[sitk.Image] = None  # lesion probability on the T2 grid
    out_dir: Optional[Path] = None  # where detections.json and lesion-probability.nrrd were written
    messages: list[str] = field(default_factory=list)  # for the user ("note: ..." in the CLI)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (detector steps: detector_output)
    stages_run: list[str] = field(default_factory=list)


class Pipeline:
    """The stages of one case, run one at a time (see the module docstring)."""

    def __init__(self, case: Case, model_package: ModelPackage, *, zones: Optional[sitk.Image] = None,
                 prostate: Optional[sitk.Image] = None, transform: Optional[sitk.Transform] = None,
                 register_preset: Optional[str] = "paper", registration_starts: Optional[int] = None,
                 zones_backend: str = "taps", drop: Sequence[str] = (), tta: bool = False, device: str = "auto",
                 detector: Any = None, all_candidates: bool = False, pz_shell_mm: Optional[float] = PZ_SHELL_MM,
                 pz_anterior_band: float = ANTERIOR_BAND):
        self.kind = check_options(model_package, drop, register_preset, zones_backend)
        from .zones.postprocess import check_pz_restriction
        check_pz_restriction(pz_shell_mm, pz_anterior_band)  # before the detector loads
        self.all_candidates = all_candidates  # FocalNet: every local maximum, not only the working point's
        # the PZ post-processing of zones segmented here (zones.segment.segment_zones; None: off)
        self.pz_shell_mm, self.pz_anterior_band = pz_shell_mm, pz_anterior_band
        self.given_zones, self.given_prostate, self.given_transform = zones, prostate, transform
        self.register_preset, self.registration_starts = register_preset, registration_starts
        self.zones_backend = zones_backend
        self.drop, self.tta, self.device = list(drop), tta, device
        self.detector = detector if detector is not None else self.kind.load(model_package, device)
        self.result = PipelineResult(case, model_package)

    # -- stages --------------------------------------------------------------------------
    def segment_zones(self, progress: Optional[ProgressCallback] = None) -> PipelineResult:
        def stage(r: PipelineResult, progress: ProgressCallback) -> None:
            case = r.case
            r.zones = self.given_zones if self.given_zones is not None else case.zones
            r.prostate = self.given_prostate if self.given_prostate is not None else case.prostate
            if r.zones is None and self.kind.needs_zones:
                from .zones.segment import segment_zones

                r.zones_result = segment_zones(case.t2, backend=self.zones_backend, case_id=case.case_id,
                                               progress=progress, pz_shell_mm=self.pz_shell_mm,
                                               pz_anterior_band=self.pz_anterior_band)
                report = r.zones_result.report
                r.messages += [f"zones: {flag}" for flag in report["qc"]["flags"] + report["warnings"]]
                r.messages.append("zones segmented automatically")
                r.zones = r.zones_result.zones
                r.prostate = sitk.Cast(r.zones > 0, sitk.sitkUInt8)
            elif not self.kind.needs_zones and self.given_prostate is None and self.given_zones is not None:
                r.prostate = sitk.Cast(self.given_zones > 0, sitk.sitkUInt8)  # the gland = every zone

        return self._stage("zones", stage, progress)

    def register(self, progress: Optional[ProgressCallback] = None) -> PipelineResult:
        def stage(r: PipelineResult, progress: ProgressCallback) -> None:
            r.transform = self.given_transform
            if (r.transform is None and self.kind.registers and self.register_preset is not None
                    and r.case.adc is not None):
                from .registration.register import register_case

                # Its random sampling and B-spline mesh follow the voxel order: use the canonical one.
                scored_in = canonical_case(dataclasses.replace(r.case, zones=r.zones, prostate=r.prostate))
                r.registration = register_case(scored_in, self.register_preset, self.registration_starts,
                                               progress=progress)
                r.transform = r.registration.transform
                r.messages.append("ADC/DWI registered to T2 automatically")

        return self._stage("registration", stage, progress)

    def preprocess(self, progress: Optional[ProgressCallback] = None) -> PipelineResult:
        def stage(r: PipelineResult, progress: ProgressCallback) -> None:
            r.preprocessed = self.kind.prepare(self.detector, r.case, r.prostate, r.zones, r.transform, progress)

        return self._stage("preprocessing", stage, progress)

    def detect(self, progress: Optional[ProgressCallback] = None) -> PipelineResult:
        def stage(r: PipelineResult, progress: ProgressCallback) -> None:
            out = self.kind.detect(self.detector, r.preprocessed, self, progress)
            r.detector_output, r.detections = out, out.detections
            r.probability = probability_on_t2(out.probability, r.case.t2)
            r.messages += out.messages

        return self._stage("detection", stage, progress)

    def write(self, out_dir: str | os.PathLike, progress: Optional[ProgressCallback] = None,
              image_format: str = "nrrd") -> PipelineResult:
        def stage(r: PipelineResult, progress: ProgressCallback) -> None:
            write_detection_outputs(out_dir, r.detections, r.probability, r.model, image_format)
            r.out_dir = Path(out_dir)
            progress(1.0, f"{len(r.detections.detections)} detections written to {out_dir}")

        return self._stage("outputs", stage, progress)

    # -- bookkeeping -----------------------------------------------------------------------
    def _stage(self, name: str, work: Callable[[PipelineResult, ProgressCallback], None],
               progress: Optional[ProgressCallback]) -> PipelineResult:
        r = self.result
        if name in r.stages_run:
            return r
        earlier = {"zones": self.segment_zones, "registration": self.register, "preprocessing": self.preprocess,
                   "detection": self.detect}
        for before in STAGES[:STAGES.index(name)]:
            if before not in r.stages_run:
                earlier[before]()
        start = time.perf_counter()
        work(r, progress or silent)
        r.timings[name] = time.perf_counter() - start
        r.stages_run.append(name)
        return r


def run_pipeline(case: Case, model_package: ModelPackage, out_dir: str | os.PathLike, *,
                 zones: Optional[sitk.Image] = None, prostate: Optional[sitk.Image] = None,
                 transform: Optional[sitk.Transform] = None, register_preset: Optional[str] = "paper",
                 registration_starts: Optional[int] = None, zones_backend: str = "taps", drop: Sequence[str] = (),
                 tta: bool = False, device: str = "auto", detector: Any = None,
                 progress: Optional[ProgressCallback] = None, image_format: str = "nrrd",
                 all_candidates: bool = False, pz_shell_mm: Optional[float] = PZ_SHELL_MM,
                 pz_anterior_band: float = ANTERIOR_BAND) -> PipelineResult:
    """Every stage on one case; writes out_dir/detections.json and out_dir/lesion-probability.nrrd.

    zones / prostate: masks on any grid (zones 1 = CG, 2 = PZ), else the case's own.
    transform: T2 point -> ADC/DWI point (e.g. `registration.read_transform`); skips registration.
    register_preset: "paper" or "fast" for automatic registration, None for none.
    drop, tta: Retina U-Net channel ablation and mirror test-time augmentation.
    detector: a detector already loaded by `load_detector` for this package (several cases).
    image_format: the probability map's file format (image_files.OUTPUT_FORMATS).
    all_candidates: FocalNet writes every local maximum, not only those at or above the
    package's working point (detection/focalnet/inference.py).
    pz_shell_mm, pz_anterior_band: the PZ post-processing of zones segmented here
    (zones.postprocess.posterior_lateral_pz; pz_shell_mm=None skips it).
    """
    pipeline = Pipeline(case, model_package, zones=zones, prostate=prostate, transform=transform,
                        register_preset=register_preset, registration_starts=registration_starts,
                        zones_backend=zones_backend, drop=drop, tta=tta, device=device, detector=detector,
                        all_candidates=all_candidates, pz_shell_mm=pz_shell_mm,
                        pz_anterior_band=pz_anterior_band)
    stages = (pipeline.segment_zones, pipeline.register, pipeline.preprocess, pipeline.detect)
    for name, stage in zip(STAGES, stages):
        stage(sub_progress(progress, *STAGE_SHARES[name]))
    return pipeline.write(out_dir, sub_progress(progress, *STAGE_SHARES["outputs"]), image_format)
