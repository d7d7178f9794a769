"""Phantoms written as a PI-CAI archive (layout in `study.picai_archive`), for tests and examples.

Per phantom: `images/<patient_id>/<patient_id>_<study_id>_{t2w,adc,hbv}.mha` (hbv = the
phantom's computed b1400 DWI; PI-CAI has no DCE or Ktrans), one marksheet row in
`picai_labels/clinical_information/marksheet.csv` and, as in `picai_labels`:

- `csPCa_lesion_delineations/human_expert/resampled/<case>.nii.gz`: the phantom's GGG >= 2
  lesions on the T2 grid, each voxel holding its lesion's ISUP grade (GGG 3 is written as 3);
  lesions of GGG 0 and 1 are not delineated, as PI-CAI delineates csPCa only. Every study has
  a file (empty without csPCa);
- `anatomical_delineations/zonal_pz_tz/phantom/truth/<case>.nii.gz`: the true zones with PI-CAI's
  labels (1 = PZ, 2 = TZ/CG).

Marksheet: `lesion_ISUP`/`lesion_GS` list every lesion (benign ones as 0 / 0+0), `case_ISUP` is
the highest, `case_csPCa` YES when it is >= 2; `prostate_volume` is the gland's volume in ml;
clinical columns the phantoms do not model are empty. Patient ids count from 10000, study ids
from 1000000, one study per patient.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..errors import ParameterError
from ..image_files import write_image_file
from ..output_files import atomic_file, staged_output_dir
from ..progress import ProgressCallback, silent
from ..study.picai_archive import HBV_B_VALUE, LABELS_DIR, relabelled
from .generate import Phantom, case_seed, make_phantom

MARKSHEET_HEADER = ("patient_id", "study_id", "mri_date", "patient_age", "psa", "psad", "prostate_volume",
                    "histopath_type", "lesion_PIRADS", "lesion_GS", "lesion_ISUP", "case_ISUP", "case_csPCa", "center")
GLEASON_OF_GGG = {0: "0+0", 1: "3+3", 2: "3+4", 3: "4+3"}
DELINEATIONS = "csPCa_lesion_delineations/human_expert/resampled"
ZONES = "anatomical_delineations/zonal_pz_tz/phantom/truth"
OUR_ZONES_TO_PICAI = {1: 2, 2: 1}  # project 1 = CG, 2 = PZ -> PI-CAI 1 = PZ, 2 = TZ
CENTER = "PHANTOM"


def marksheet_row(phantom: Phantom, patient_id: str, study_id: str) -> dict[str, str]:
    grades = [lesion.ggg for lesion in phantom.ground_truth.lesions]
    case_isup = max(grades + [phantom.ground_truth.patient_ggg or 0])
    zones = sitk.GetArrayViewFromImage(phantom.case.zones)
    volume_ml = float((zones > 0).sum()) * float(np.prod(phantom.case.zones.GetSpacing())) / 1000.0
    row = dict.fromkeys(MARKSHEET_HEADER, "")
    row.update(patient_id=patient_id, study_id=study_id, prostate_volume=f"{volume_ml:.1f}",
               histopath_type="MRBx" if grades else "", lesion_GS=",".join(GLEASON_OF_GGG[g] for g in grades),
               lesion_ISUP=",".join(str(g) for g in grades), case_ISUP=str(case_isup),
               case_csPCa="YES" if case_isup >= 2 else "NO", center=CENTER)
    return row


def write_picai_phantom(phantom: Phantom, root: Path, patient_id: str, study_id: str) -> Path:
    """One phantom's images and label files below `root`; returns its case reference."""
    case_id = f"{patient_id}_{study_id}"
    folder = root / "images" / patient_id
    folder.mkdir(parents=True, exist_ok=True)
    case = phantom.case
    hbv = case.dwi_computed.get(HBV_B_VALUE)
    if hbv is None:
        hbv = case.all_dwi()[max(case.all_dwi())]
    for sequence, image in (("t2w", case.t2), ("adc", case.adc), ("hbv", hbv)):
        write_image_file(image, folder / f"{case_id}_{sequence}.mha")
    labels = root / LABELS_DIR
    grade = {lesion.label if lesion.label is not None else lesion.id: lesion.ggg
             for lesion in phantom.ground_truth.lesions if lesion.ggg >= 2}
    (labels / DELINEATIONS).mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(relabelled(phantom.lesion_mask, grade), str(labels / DELINEATIONS / f"{case_id}.nii.gz"), True)
    (labels / ZONES).mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(relabelled(case.zones, OUR_ZONES_TO_PICAI), str(labels / ZONES / f"{case_id}.nii.gz"), True)
    return folder / case_id


def make_picai_phantom_set(n: int, seed: int, out_dir: str | os.PathLike,
                           progress: Optional[ProgressCallback] = None, **kw) -> Path:
    """Write `n` phantoms as a PI-CAI archive at out_dir (staged: nothing half-written).
    Keyword arguments go to `make_phantom` (DCE and Ktrans are never drawn). Returns out_dir."""
    if n < 1:
        raise ParameterError(f"the number of phantoms must be at least 1, got {n}.")
    progress = progress or silent
    kw.update(with_dce=False, with_ktrans=False)
    out = Path(out_dir)
    with staged_output_dir(out) as stage:
        rows = []
        for i in range(n):
            patient_id, study_id = str(10000 + i), str(1000000 + i)
            progress(i / n, f"phantom {i + 1}/{n} ({patient_id}_{study_id})")
            phantom = make_phantom(case_seed(seed, i), case_id=f"{patient_id}_{study_id}", **kw)
            write_picai_phantom(phantom, stage, patient_id, study_id)
            rows.append(marksheet_row(phantom, patient_id, study_id))
        sheet = stage / LABELS_DIR / "clinical_information" / "marksheet.csv"
        sheet.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(sheet) as handle:
            writer = csv.DictWriter(handle, fieldnames=MARKSHEET_HEADER, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        progress(1.0, f"{n} phantoms written")
    return out
