"""The files of a lesion annotation: `lesions.nrrd` (one label per lesion on the T2 grid) and
`ground-truth.json` (prostate-cad-ground-truth/1: each lesion's id, GGG, label, `center_lps` = the
centre of its mask's bounding box and `seed_lps` = the point it was grown from), written together
or not at all. `prostate-cad grow` and the panel's Export both write them, so training reads one
format whichever way the annotation was made.

The box centre, not the seed, is the lesion's centre because the authors' released evaluation
(`match_lesions`) measures the distance from a detection to the centre of the ground-truth
lesion's box: a seed clicked near a lesion's edge would otherwise move a hit out of the 15 mm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import SimpleITK as sitk

from ..coordinates import mask_box_centres
from ..formats import GroundTruthCase, GroundTruthSet, Lesion, write_ground_truth
from ..image_files import with_format, write_image_file
from ..output_files import staged_output_dir
from .growing import Seed

LABELS_FILE = "lesions.nrrd"
GROUND_TRUTH_FILE = "ground-truth.json"


def write_annotation(out_dir: str | Path, case_id: str, labels: sitk.Image, seeds: Sequence[Seed],
                     label_of: Optional[dict[int, int]] = None,
                     extra_json: Optional[dict[str, Any]] = None, image_format: str = "nrrd",
                     overwrite: Optional[bool] = None) -> Path:
    """Write out_dir/lesions.nrrd (.nii.gz, .mha: `image_format`) + ground-truth.json (and any
    `extra_json` files, name -> object) in one staged step; returns the ground-truth path.
    `label_of` maps a seed id to its label in `labels` (default: the seed id). The patient's
    GGG is the highest. The folder's other files stay (it may be the case's own folder); files
    of the same name are replaced only with `overwrite` (unset: as the command's --overwrite says)."""
    label_of = label_of or {}
    centres = mask_box_centres(labels)
    lesions = [Lesion(s.id, s.ggg, centres.get(label_of.get(s.id, s.id), s.center_lps), label_of.get(s.id, s.id),
                      seed_lps=tuple(float(v) for v in s.center_lps)) for s in seeds]
    case = GroundTruthCase(case_id, lesions, patient_ggg=max(s.ggg for s in seeds))
    with staged_output_dir(out_dir, overwrite, keep_other_files=True) as stage:
        name = with_format(LABELS_FILE, image_format)
        write_image_file(labels, stage / name, pixel_type=sitk.sitkUInt16)
        case.lesion_mask = stage / name
        write_ground_truth(GroundTruthSet([case]), stage / GROUND_TRUTH_FILE)
        for name, content in (extra_json or {}).items():
            (stage / name).write_text(json.dumps(content, indent=1))
    return Path(out_dir) / GROUND_TRUTH_FILE

