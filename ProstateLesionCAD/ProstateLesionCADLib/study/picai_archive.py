"""A PI-CAI archive as cases and as ground truth.

The PI-CAI public training set comes as an images archive and the `picai_labels`
repository, unpacked side by side into one folder (the "archive")::

    <archive>/images/<patient_id>/<patient_id>_<study_id>_t2w.mha     (also _adc, _hbv, _sag, _cor)
    <archive>/picai_labels/clinical_information/marksheet.csv
    <archive>/picai_labels/csPCa_lesion_delineations/human_expert/resampled/<patient_id>_<study_id>.nii.gz
    <archive>/picai_labels/csPCa_lesion_delineations/AI/Bosma22a/<patient_id>_<study_id>.nii.gz
    <archive>/picai_labels/anatomical_delineations/zonal_pz_tz/<source>/<model>/<patient_id>_<study_id>.nii.gz

Image folders may also be the archive's fold folders (`picai_public_images_fold0/<patient_id>/`),
and the marksheet and label folders may sit directly in the archive instead of in `picai_labels/`.

A *case reference* is `<folder>/<patient_id>_<study_id>`, the common prefix of a study's
files (e.g. `<archive>/images/10000/10000_1000000`), or its `_t2w.mha` file; `load_case` takes
either, and `list_cases(archive)` gives every study's reference. The case id is
`<patient_id>_<study_id>`, as in PI-CAI.

Roles: `_t2w` is the T2, `_adc` the ADC (converted to 10^-6 mm²/s when stored otherwise),
`_hbv` the high-b-value DWI, kept as a computed DWI at b = HBV_B_VALUE (PI-CAI gives no
b-value in the file; its protocol asks for b >= 1400); `_sag`/`_cor` are recorded as unused
(no detector reads them). Zones, when the archive holds a zonal delineation (PI-CAI: 1 = PZ,
2 = TZ), are loaded on the T2 grid as the project's 1 = CG, 2 = PZ.

Ground truth (`read_ground_truth`): marksheet columns `patient_id`, `study_id`, `case_ISUP`
(the study's highest ISUP grade group, 0 without cancer) and `case_csPCa` (YES/NO) are read;
`lesion_ISUP`/`lesion_GS` are not (their order does not follow the delineation files).
Lesions are the 26-connected components of the csPCa delineation (as picai_eval finds
them); a component's grade is its label value (PI-CAI: 2..5 = ISUP grade group, 1 = ISUP >= 2
from the AI delineations, counted as GGG2). Delineations come from
`human_expert/resampled` (on the T2 grid), else `AI/Bosma22a`; a csPCa study without
either has no lesion list and no label file, only its `case_ISUP`.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..coordinates import mask_box_centres
from ..errors import CaseError, FormatError
from ..formats import GroundTruthCase, GroundTruthSet, Lesion
from ..image_files import read_image_file, same_grid
from ..progress import ProgressCallback, silent
from .adc_units import adc_to_micro
from .case import Case, SeriesInfo

SEQUENCES = ("t2w", "adc", "hbv", "sag", "cor")
IMAGE_SUFFIX = ".mha"
HBV_B_VALUE = 1400.0
LABELS_DIR = "picai_labels"
MARKSHEET_PLACES = ("marksheet.csv", f"{LABELS_DIR}/clinical_information/marksheet.csv",
                    "clinical_information/marksheet.csv")
# delineation folders below the labels root, in order of preference, and what they are
DELINEATION_SOURCES = (("csPCa_lesion_delineations/human_expert/resampled", "human expert"),
                       ("csPCa_lesion_delineations/AI/Bosma22a", "AI (Bosma22a)"))
ZONAL_GLOB = "anatomical_delineations/zonal_pz_tz/*/*"
PICAI_ZONES_TO_OURS = {1: 2, 2: 1}  # PI-CAI 1 = PZ, 2 = TZ -> project 1 = CG, 2 = PZ
MARKSHEET_COLUMNS = ("patient_id", "study_id", "case_ISUP")
_CASE_ID = re.compile(r"^[^_/\\]+_[^_/\\]+$")
_T2_NAME = re.compile(r"^([^_/\\]+_[^_/\\]+)_t2w\.mha$", re.IGNORECASE)


# ---------------------------------------------------------------- case references

def case_prefix(path: str | os.PathLike) -> Optional[Path]:
    """The `<folder>/<patient>_<study>` prefix a path refers to, or None when it is no PI-CAI case."""
    path = Path(path)
    match = _T2_NAME.match(path.name)
    if match and path.is_file():
        return path.parent / match.group(1)
    if _CASE_ID.match(path.name) and not path.exists() and _sequence_file(path, "t2w").is_file():
        return path
    return None


def is_picai_case(path: str | os.PathLike) -> bool:
    return case_prefix(path) is not None


def _sequence_file(prefix: Path, sequence: str) -> Path:
    return prefix.parent / f"{prefix.name}_{sequence}{IMAGE_SUFFIX}"


def _labels_roots(archive: Path) -> list[Path]:
    return [root for root in (archive / LABELS_DIR, archive) if root.is_dir()]


def is_picai_archive(path: str | os.PathLike) -> bool:
    """A folder holding a PI-CAI marksheet at one of MARKSHEET_PLACES."""
    path = Path(path)
    return path.is_dir() and any((path / place).is_file() for place in MARKSHEET_PLACES)


def archive_of(case: str | os.PathLike) -> Optional[Path]:
    """The archive a case reference lies in (the nearest folder above it with a marksheet)."""
    for parent in Path(case).resolve().parents[:4]:
        if is_picai_archive(parent):
            return parent
    return None


def list_cases(archive: str | os.PathLike) -> list[Path]:
    """Every study of a PI-CAI archive as a case reference `<folder>/<patient>_<study>`, by case id.

    The references are what `load_case` (and so every verb taking a case) accepts. Studies are
    found by their `_t2w.mha` file one folder below any top-level folder of the archive
    (`images/<patient_id>/`, or the public archive's `picai_public_images_fold*/<patient_id>/`).
    CaseError when the folder holds no study.
    """
    archive = Path(archive)
    if not archive.is_dir():
        raise CaseError(f"{archive}: no such folder (expected a PI-CAI archive).")
    found: dict[str, Path] = {}
    for t2 in archive.glob(f"*/*/*_t2w{IMAGE_SUFFIX}"):
        if t2.parts[len(archive.parts)] == LABELS_DIR:
            continue
        match = _T2_NAME.match(t2.name)
        if match:
            found.setdefault(match.group(1), t2.parent / match.group(1))
    if not found:
        raise CaseError(f"{archive}: no PI-CAI study found (expected images/<patient_id>/<patient_id>_<study_id>_t2w.mha).")
    return [found[case_id] for case_id in sorted(found)]


def case_reference(archive: str | os.PathLike, case_id: str) -> Path:
    """The reference of one study of an archive by its `<patient>_<study>` id (CaseError if absent)."""
    for ref in list_cases(archive):
        if ref.name == case_id:
            return ref
    raise CaseError(f"{archive}: no study {case_id!r} (expected {case_id}_t2w.mha below images/<patient_id>/).")


# ---------------------------------------------------------------- cases

def _zones_file(archive: Optional[Path], case_id: str) -> Optional[Path]:
    if archive is None:
        return None
    for root in _labels_roots(archive):
        for folder in sorted(root.glob(ZONAL_GLOB)):
            for suffix in (".nii.gz", IMAGE_SUFFIX):
                candidate = folder / f"{case_id}{suffix}"
                if candidate.is_file():
                    return candidate
    return None


def _zones_on_t2(path: Path, t2: sitk.Image) -> sitk.Image:
    picai = read_image_file(path, "zonal delineation", label=True)
    if not same_grid(picai, t2):
        picai = sitk.Resample(picai, t2, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return relabelled(picai, PICAI_ZONES_TO_OURS)


def relabelled(image: sitk.Image, values: dict[int, int]) -> sitk.Image:
    """`image` with each label of `values` mapped to its value, every other voxel 0 (uint8)."""
    source = sitk.GetArrayFromImage(image)
    out = np.zeros(source.shape, np.uint8)
    for old, new in values.items():
        out[source == old] = new
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(image)
    return result


def load_picai_case(path: str | os.PathLike, progress: Optional[ProgressCallback] = None) -> Case:
    """The study a case reference names, with the archive's zonal delineation when there is one."""
    progress = progress or silent
    prefix = case_prefix(path)
    if prefix is None:
        raise CaseError(f"{path}: not a PI-CAI case (expected <patient_id>_<study_id> beside its _t2w.mha file).")
    case_id = prefix.name
    files = {seq: _sequence_file(prefix, seq) for seq in SEQUENCES}
    progress(0.0, f"reading {case_id}")
    case = Case(case_id=case_id, t2=read_image_file(files["t2w"], "T2 image"))
    case.used.append(SeriesInfo("T2", "axial T2 (t2w)", str(files["t2w"]), "file"))
    if files["adc"].is_file():
        case.adc, note = adc_to_micro(read_image_file(files["adc"], "ADC image"))
        case.used.append(SeriesInfo("ADC", "ADC (adc)", str(files["adc"]), "file"))
        if note:
            case.notes.append(note)
    progress(0.5, f"reading {case_id}")
    if files["hbv"].is_file():
        case.dwi_computed[HBV_B_VALUE] = read_image_file(files["hbv"], "high b-value DWI image")
        case.used.append(SeriesInfo("DWI_COMPUTED", f"high b-value DWI (hbv), taken as b{HBV_B_VALUE:g}",
                                    str(files["hbv"]), "file"))
    for seq, what in (("sag", "sagittal T2"), ("cor", "coronal T2")):
        if files[seq].is_file():
            case.unused.append(SeriesInfo("", f"{what} ({seq})", str(files[seq]), "no detector reads it"))
    zones = _zones_file(archive_of(prefix), case_id)
    if zones is not None:
        case.zones = _zones_on_t2(zones, case.t2)
        case.prostate = sitk.Cast(case.zones > 0, sitk.sitkUInt8)
        case.notes.append(f"zones from the archive's zonal delineation {zones.parent.parent.name}/{zones.parent.name}")
    progress(1.0, f"{case_id} loaded")
    return case


# ---------------------------------------------------------------- ground truth

@dataclass
class MarksheetRow:
    patient_id: str
    study_id: str
    case_isup: int

    @property
    def case_id(self) -> str:
        return f"{self.patient_id}_{self.study_id}"


@dataclass
class PicaiTruth:
    """The ground truth of an archive: per case its label file (None without one) and source."""

    ground_truth: GroundTruthSet
    label_files: dict[str, Optional[Path]] = field(default_factory=dict)
    label_sources: dict[str, str] = field(default_factory=dict)  # case id -> "human expert" / "AI (Bosma22a)"


def marksheet_path(archive: str | os.PathLike) -> Path:
    archive = Path(archive)
    for place in MARKSHEET_PLACES:
        if (archive / place).is_file():
            return archive / place
    raise FormatError(f"{archive}: no PI-CAI marksheet (looked for {', '.join(MARKSHEET_PLACES)}).")


def _isup(value: str, where: str) -> int:
    try:
        number = float(value)
    except ValueError:
        raise FormatError(f"{where}: case_ISUP must be a grade group 0..5, got {value!r}.") from None
    if number != int(number) or not 0 <= number <= 5:
        raise FormatError(f"{where}: case_ISUP must be a grade group 0..5, got {value!r}.")
    return int(number)


def read_marksheet(archive: str | os.PathLike) -> dict[str, MarksheetRow]:
    """The marksheet's rows by case id (`<patient_id>_<study_id>`)."""
    path = marksheet_path(archive)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in MARKSHEET_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise FormatError(f"{path}: no column {missing[0]!r} (a PI-CAI marksheet has patient_id, study_id, case_ISUP).")
        rows = {}
        for line, entry in enumerate(reader, start=2):
            row = MarksheetRow(entry["patient_id"].strip(), entry["study_id"].strip(),
                               _isup(entry["case_ISUP"].strip(), f"{path} line {line}"))
            if row.case_id in rows:
                raise FormatError(f"{path} line {line}: study {row.case_id} appears twice.")
            rows[row.case_id] = row
    return rows


def delineation_file(archive: str | os.PathLike, case_id: str) -> tuple[Optional[Path], str]:
    """The csPCa delineation of a case and its source, or (None, "") when the archive has none."""
    for root in _labels_roots(Path(archive)):
        for folder, source in DELINEATION_SOURCES:
            for suffix in (".nii.gz", IMAGE_SUFFIX):
                candidate = root / folder / f"{case_id}{suffix}"
                if candidate.is_file():
                    return candidate, source
    return None, ""


def delineation_lesions(label: sitk.Image) -> list[Lesion]:
    """The lesions of a delineation: 26-connected components, each centred on its bounding box
    (LPS), as every ground truth of the project is (`mask_box_centres`), grade = label value."""
    components = sitk.ConnectedComponent(sitk.Cast(label > 0, sitk.sitkUInt8), True)
    centres = mask_box_centres(components)
    grades = sitk.LabelIntensityStatisticsImageFilter()
    grades.Execute(components, sitk.Cast(label, sitk.sitkFloat32))
    return [Lesion(lesion_id, min(max(int(grades.GetMaximum(lesion_id)), 2), 3), centres[lesion_id])
            for lesion_id in sorted(centres)]


def read_ground_truth(archive: str | os.PathLike, progress: Optional[ProgressCallback] = None) -> PicaiTruth:
    """Ground truth of the archive's studies: `patient_ggg` = case_ISUP (4, 5 count as 3), lesions
    from its csPCa delineation, `lesion_mask` = that delineation file.

    The studies are those with images in the archive (the marksheet covers all 1500 public
    studies, an archive often holds a few folds), or every marksheet row when it holds no images.
    """
    progress = progress or silent
    archive = Path(archive)
    rows = read_marksheet(archive)
    try:
        present = {ref.name for ref in list_cases(archive)}
    except CaseError:
        present = set(rows)
    rows = {case_id: row for case_id, row in rows.items() if case_id in present}
    truth = PicaiTruth(GroundTruthSet([]))
    for n, (case_id, row) in enumerate(sorted(rows.items())):
        progress(n / max(len(rows), 1), f"ground truth of {case_id}")
        path, source = delineation_file(archive, case_id)
        lesions = []
        if path is not None:
            label = read_image_file(path, f"csPCa delineation of case {case_id!r}", label=True)
            lesions = delineation_lesions(label)
            truth.label_sources[case_id] = source
        truth.label_files[case_id] = path
        truth.ground_truth.cases.append(GroundTruthCase(case_id, lesions, min(row.case_isup, 3), path))
    return truth
