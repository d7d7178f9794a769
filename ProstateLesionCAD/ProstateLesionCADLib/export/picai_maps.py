"""PI-CAI detection maps: a run's lesions as picai_eval reads them, and the case-level likelihood.

A detection map (PI-CAI, picai_eval) is a float volume on the T2 grid in which every lesion
candidate is one 26-connected region of constant value, its csPCa likelihood, separated from
every other candidate (picai_eval labels the non-zero voxels 26-connected, so two touching
candidates would merge into one); 0 elsewhere. The case-level likelihood is the map's maximum,
as in PI-CAI.

Built from a detections file here:
- candidates are the detections meeting the criterion (predicted GGG >= 2 by default, PI-CAI's
  csPCa = ISUP >= 2, the same detections the paper's evaluation uses for GGG>=2) with a score
  above 0; the likelihood is the detection's score;
- a candidate's voxels are its lesion mask (`lesions.masks.detection_mask`: the probability map
  >= 0.5 in its box, else the half-maximum contour, else the ellipsoid in its box), the voxels
  the Slicer panel and every export show;
- in decreasing score, each candidate keeps only its voxels not within one voxel (26-neighbours)
  of a higher-scoring candidate's, and of those its largest 26-connected part; a candidate left
  with no voxel (inside a higher-scoring one) is dropped and listed. The highest-scoring
  candidate always keeps its region, so the case likelihood equals the highest score among the
  candidates (as float32), which is the paper's patient-level score for the criterion.

Files (`write_picai_maps`): `<case_id>_detection_map.nii.gz` (or `.mha`), the names picai_eval's
`evaluate_folder` looks for, and `<case_id>_likelihood.json` with the case-level likelihood and
the candidates.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import ParameterError
from ..formats import DetectionCase, read_detections
from ..ggg_palette import criterion_name
from ..image_files import read_image_file
from ..lesions.masks import detection_mask
from ..output_files import atomic_file, staged_output_dir
from ..progress import ProgressCallback, silent
from .segments import probability_on_grid

PICAI_CRITERION = 2  # csPCa: ISUP (GGG) >= 2
MAP_SUFFIXES = (".nii.gz", ".mha")
NEIGHBOURS = np.ones((3, 3, 3), bool)
LIKELIHOOD_FORMAT = "prostate-cad-picai-likelihood/1"


@dataclass
class Candidate:
    detection_id: int
    likelihood: float  # as stored in the map (float32)
    voxels: int


@dataclass
class DetectionMap:
    case_id: str
    image: sitk.Image  # float32 on the T2 grid
    candidates: list[Candidate] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)  # detection ids inside a higher-scoring candidate
    outside: list[int] = field(default_factory=list)  # detection ids whose box misses the grid

    @property
    def likelihood(self) -> float:
        return float(sitk.GetArrayViewFromImage(self.image).max())


def map_file_name(case_id: str, suffix: str = ".nii.gz") -> str:
    return f"{case_id}_detection_map{suffix}"


def likelihood_file_name(case_id: str) -> str:
    return f"{case_id}_likelihood.json"


def detection_map(case: DetectionCase, grid: sitk.Image, probability: Optional[sitk.Image] = None,
                  criterion: int = PICAI_CRITERION) -> DetectionMap:
    """The detection map of one case on `grid` (see the module docstring for the rules)."""
    if criterion not in (1, 2, 3):
        raise ParameterError(f"The PI-CAI criterion must be GGG>=1, 2 or 3, got {criterion}.")
    prob = probability_on_grid(probability, grid)
    size = grid.GetSize()
    values = np.zeros((size[2], size[1], size[0]), np.float32)
    result = DetectionMap(case.case_id, sitk.Image())
    ranked = sorted((d for d in case.detections if d.ggg >= criterion and d.score > 0), key=lambda d: (-d.score, d.id))
    for det in ranked:
        crop = detection_mask(det, grid, prob)
        if crop is None:
            result.outside.append(det.id)
            continue
        i, j, k = crop.lo
        nk, nj, ni = crop.mask.shape
        window = (slice(max(k - 1, 0), k + nk + 1), slice(max(j - 1, 0), j + nj + 1), slice(max(i - 1, 0), i + ni + 1))
        own = np.zeros(values[window].shape, bool)
        own[k - window[0].start:k - window[0].start + nk, j - window[1].start:j - window[1].start + nj,
            i - window[2].start:i - window[2].start + ni] = crop.mask
        taken = ndimage.binary_dilation(values[window] > 0, structure=NEIGHBOURS)
        free = own & ~taken
        parts, n = ndimage.label(free, structure=NEIGHBOURS)
        if n == 0:
            result.dropped.append(det.id)
            continue
        largest = 1 + int(np.argmax(np.bincount(parts.ravel())[1:]))
        region = parts == largest
        values[window][region] = np.float32(det.score)
        result.candidates.append(Candidate(det.id, float(np.float32(det.score)), int(region.sum())))
    image = sitk.GetImageFromArray(values)
    image.CopyInformation(grid)
    result.image = image
    return result


def _t2_grid(case_path: str | os.PathLike) -> tuple[str, sitk.Image]:
    """(case id, T2 grid) of a case given as every verb takes it, or a T2 image file."""
    from ..study.picai_archive import case_prefix

    prefix = case_prefix(case_path)
    if prefix is not None:
        return prefix.name, read_image_file(prefix.parent / f"{prefix.name}_t2w.mha", "T2 image")
    from .source import find_source

    source = find_source(case_path)
    return source.case_id, source.t2_grid


@dataclass
class PicaiMapResult:
    case_id: str
    detection_map: DetectionMap
    files: dict[str, Path]


def write_picai_maps(case_path: str | os.PathLike, detections: str | os.PathLike, out_dir: str | os.PathLike,
                     case_id: Optional[str] = None, criterion: int = PICAI_CRITERION, suffix: str = ".nii.gz",
                     progress: Optional[ProgressCallback] = None) -> PicaiMapResult:
    """Write `<case>_detection_map<suffix>` and `<case>_likelihood.json` of one run into out_dir
    (beside what it holds; several cases can share one folder)."""
    from .results import detection_case

    progress = progress or silent
    if suffix not in MAP_SUFFIXES:
        raise ParameterError(f"A PI-CAI detection map is written as {' or '.join(MAP_SUFFIXES)}, not {suffix!r}.")
    progress(0.0, "reading the study's T2 grid")
    study_id, grid = _t2_grid(case_path)
    path = Path(detections)
    case = detection_case(read_detections(path), path, study_id, case_id)
    probability = None
    if case.probability_map is not None:
        probability = read_image_file(case.probability_map, f"probability map of case {case.case_id!r}")
    progress(0.3, "lesion candidates")
    dmap = detection_map(case, grid, probability, criterion)
    names = {"detection map": map_file_name(case.case_id, suffix), "likelihood": likelihood_file_name(case.case_id)}
    with staged_output_dir(out_dir) as stage:
        sitk.WriteImage(dmap.image, str(stage / names["detection map"]), True)
        summary = {"format": LIKELIHOOD_FORMAT, "case_id": case.case_id, "likelihood": dmap.likelihood,
                   "criterion": criterion_name(criterion), "detection_map": names["detection map"],
                   "candidates": [vars(c) for c in dmap.candidates],
                   "inside_higher_candidate": dmap.dropped, "outside_grid": dmap.outside}
        with atomic_file(stage / names["likelihood"]) as handle:
            json.dump(summary, handle, indent=1)
    progress(1.0, "detection map written")
    return PicaiMapResult(case.case_id, dmap, {k: Path(out_dir) / v for k, v in names.items()})
