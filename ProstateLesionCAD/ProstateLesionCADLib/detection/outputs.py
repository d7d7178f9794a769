"""What a detector returns for one case, and the one writer of its files.

Every detector kind returns a `DetectorOutput`: the detections (LPS mm) and the lesion
probability map on the detector's own grid. `write_detection_outputs` writes

- DIR/detections.json: prostate-cad-detections/1 (ARCHITECTURE.md), one case, with the model's
  name, version and intended use;
- DIR/lesion-probability.nrrd: the probability map on the T2 grid (float32, 0 outside the
  detector's field of view), referenced from detections.json (.nii.gz or .mha with
  `image_format`);

in a staged folder, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from ..formats import DetectionCase, DetectionSet, write_detections
from ..image_files import with_format, write_image_file
from ..models.package import ModelPackage
from ..output_files import staged_output_dir

PROBABILITY_FILE = "lesion-probability.nrrd"
DETECTIONS_FILE = "detections.json"


@dataclass
class DetectorOutput:
    """One case through one detector."""

    detections: DetectionCase
    probability: sitk.Image  # lesion probability on the detector's grid (LPS geometry)
    messages: list[str] = field(default_factory=list)  # e.g. channels left blank
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step


def probability_on_t2(probability: sitk.Image, t2: sitk.Image) -> sitk.Image:
    """A probability map resampled linearly onto the T2 grid (float32, 0 outside its grid)."""
    return sitk.Resample(probability, t2, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def model_entry(pkg: ModelPackage) -> dict:
    """The `model` block of detections.json."""
    return {"name": pkg.name, "version": pkg.version, "intended_use": pkg.card.get("intended_use", "")}


def write_detection_outputs(out_dir: str | os.PathLike, detections: DetectionCase, probability_t2: sitk.Image,
                            pkg: ModelPackage, image_format: str = "nrrd") -> dict[str, Path]:
    """Write DIR/detections.json and DIR/lesion-probability.nrrd (.nii.gz, .mha: `image_format`),
    staged; afterwards `detections.probability_map` points at the written map. Returns the paths by role."""
    out = Path(out_dir)
    name = with_format(PROBABILITY_FILE, image_format)
    with staged_output_dir(out) as stage:
        write_image_file(probability_t2, stage / name, pixel_type=sitk.sitkFloat32)
        staged = DetectionCase(detections.case_id, detections.detections, stage / name)
        write_detections(DetectionSet([staged], model=model_entry(pkg)), stage / DETECTIONS_FILE)
    detections.probability_map = out / name
    return {"detections": out / DETECTIONS_FILE, "probability": out / name}
