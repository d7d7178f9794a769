"""Retina U-Net detection of one pre-processed case: the channel stack re-gridded onto the
crop the model was trained on, its input channels picked (`inference.model_input`), the
fold x epoch ensemble run, and the boxes mapped to LPS. `pipeline.run_pipeline` runs it on
a whole case (zones, registration and pre-processing first, the files after)."""

from __future__ import annotations

import time
from typing import Optional, Sequence

from ...models.package import ModelPackage
from ...progress import silent
from ..outputs import DetectorOutput
from .inference import RetinaUNetDetector, model_input, regrid, to_detection_case


def model_grid(pkg: ModelPackage) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Crop size (x, y, z) and spacing (mm) the model was trained on."""
    size = tuple(int(v) for v in pkg.card.get("crop_size", (160, 160, 24)))
    spacing = tuple(float(v) for v in pkg.card.get("spacing", (0.5, 0.5, 3.0)))
    return size, spacing  # type: ignore[return-value]


def detect_preprocessed(prep, pkg: ModelPackage, detector: Optional[RetinaUNetDetector] = None,
                        drop: Sequence[str] = (), tta: bool = False, device: str = "auto",
                        progress=None) -> DetectorOutput:
    """Run the ensemble on a pre-processed case (`preprocessing.Preprocessed`). The output's
    probability map is the mean lesion map of the members on the model's crop grid."""
    progress = progress or silent
    t0 = time.perf_counter()
    size, spacing = model_grid(pkg)
    prep = regrid(prep, size, spacing)
    inp = model_input(prep, pkg.card, drop)
    t1 = time.perf_counter()
    detector = detector or RetinaUNetDetector(pkg, device)
    out = detector.predict(inp.array, tta=tta, progress=progress)
    probability = prep.geometry.as_crop_image(out.seg_mean, layout="yxz")
    return DetectorOutput(to_detection_case(out, prep.geometry, prep.case_id), probability, inp.messages,
                          {"model input": t1 - t0, **out.timings})
