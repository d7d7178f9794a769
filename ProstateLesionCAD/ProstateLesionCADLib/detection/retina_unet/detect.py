"""`prostate-cad detect`: case -> registration -> zones -> pre-processing -> ensemble ->
DIR/detections.json + DIR/lesion-probability.nrrd (issue 7 part 4).

Each step reuses what the case already has (zonal masks, a given transform); the
registration and zonal-segmentation steps are passed in as callables so the CLI (or the
Slicer module) decides how they run. All outputs are staged: nothing is half-written.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ...errors import CaseError
from ...formats import DetectionCase, DetectionSet, write_detections
from ...models.package import ModelPackage
from ...output_files import staged_output_dir
from ...progress import silent, sub_progress
from .inference import DetectorWarning, RetinaUNetDetector, model_input, regrid, to_detection_case

PROBABILITY_FILE = "lesion-probability.nrrd"
DETECTIONS_FILE = "detections.json"

ZonesFn = Callable[[Any, Callable[[float, str], None]], tuple[Optional[sitk.Image], sitk.Image]]
RegisterFn = Callable[[Any, Callable[[float, str], None]], Optional[sitk.Transform]]


@dataclass
class DetectReport:
    detections: DetectionCase
    messages: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def model_grid(pkg: ModelPackage) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Crop size (x, y, z) and spacing (mm) the model was trained on."""
    size = tuple(int(v) for v in pkg.card.get("crop_size", (160, 160, 24)))
    spacing = tuple(float(v) for v in pkg.card.get("spacing", (0.5, 0.5, 3.0)))
    return size, spacing  # type: ignore[return-value]


def detect_preprocessed(prep, pkg: ModelPackage, detector: Optional[RetinaUNetDetector] = None,
                        drop: Sequence[str] = (), tta: bool = False, device: str = "auto",
                        progress=None) -> tuple[DetectionCase, np.ndarray, Any, list[str], dict[str, float]]:
    """Run the ensemble on a pre-processed case. Returns the detections (LPS), the lesion
    probability map on the model's crop grid (Y, X, Z), that crop geometry, messages, timings."""
    progress = progress or silent
    t0 = time.perf_counter()
    size, spacing = model_grid(pkg)
    prep = regrid(prep, size, spacing)
    inp = model_input(prep, pkg.card, drop)
    t1 = time.perf_counter()
    detector = detector or RetinaUNetDetector(pkg, device)
    out = detector.predict(inp.array, tta=tta, progress=progress)
    timings = {"model input": t1 - t0, **out.timings}
    return to_detection_case(out, prep.geometry, prep.case_id), out.seg_mean, prep.geometry, inp.messages, timings


def detect_case(case, pkg: ModelPackage, out_dir: str | Path, *, drop: Sequence[str] = (), tta: bool = False,
                device: str = "auto", prostate: Optional[sitk.Image] = None, zones: Optional[sitk.Image] = None,
                transform: Optional[sitk.Transform] = None, register: Optional[RegisterFn] = None,
                segment_zones: Optional[ZonesFn] = None, progress=None) -> DetectReport:
    """The whole detect pipeline for one loaded case; writes DIR/detections.json (DESIGN.md
    format, LPS) and DIR/lesion-probability.nrrd (T2 grid, fraction of ensemble votes)."""
    from ...preprocessing.preprocess import preprocess

    progress = progress or silent
    timings: dict[str, float] = {}
    messages: list[str] = []
    t = time.perf_counter()
    prostate = prostate if prostate is not None else case.prostate
    zones = zones if zones is not None else case.zones
    if zones is None:
        if segment_zones is None:
            raise CaseError(f"Case {case.case_id} has no zonal segmentation: run `prostate-cad zones` first "
                            "or give --zones FILE.")
        prostate, zones = segment_zones(case, sub_progress(progress, 0.0, 0.15))
        messages.append("zones segmented automatically")
    timings["zones"] = time.perf_counter() - t
    t = time.perf_counter()
    if transform is None and register is not None and case.adc is not None:
        transform = register(case, sub_progress(progress, 0.15, 0.35))
        messages.append("ADC/DWI registered to T2 automatically")
    timings["registration"] = time.perf_counter() - t
    t = time.perf_counter()
    prep = preprocess(case, prostate, zones, dwi_adc_transform=transform, progress=sub_progress(progress, 0.35, 0.45))
    timings["preprocessing"] = time.perf_counter() - t
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DetectorWarning)  # reported through `messages`
        dcase, seg, geometry, more, det_t = detect_preprocessed(prep, pkg, drop=drop, tta=tta, device=device,
                                                                progress=sub_progress(progress, 0.45, 0.95))
    messages += more
    timings.update(det_t)
    t = time.perf_counter()
    with staged_output_dir(out_dir) as stage:
        prob = geometry.to_t2(seg, "linear", layout="yxz")
        sitk.WriteImage(sitk.Cast(prob, sitk.sitkFloat32), str(stage / PROBABILITY_FILE), True)
        dcase.probability_map = stage / PROBABILITY_FILE
        dset = DetectionSet([dcase], model={"name": pkg.name, "version": pkg.version,
                                            "intended_use": pkg.card.get("intended_use", "")})
        write_detections(dset, stage / DETECTIONS_FILE)
    dcase.probability_map = Path(out_dir) / PROBABILITY_FILE
    timings["writing"] = time.perf_counter() - t
    progress(1.0, f"{len(dcase.detections)} detections written to {out_dir}")
    return DetectReport(dcase, messages, timings)
