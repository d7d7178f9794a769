"""The CAD panel's "Export to DICOM database": the shown detection run as a DICOM SEG and a DICOM SR
(TID 1500 measurement report), a new series in the T2's study, imported into Slicer's DICOM database.

Three parts, as in dicom_database.py, so that only the last needs a running Slicer:

- **Where the DICOM is** (`export_availability`, `study_source`): a T2 loaded from the DICOM database
  (it carries DICOM.instanceUIDs) gives the study's files through the database
  (`dicom_database.volume_study_files`); they are linked into the step's folder with a case file
  choosing the T2's own series, so the SEG refers to exactly the instances the panel shows. A study
  the project's loader read from a DICOM folder gives that folder. A T2 from image files (NRRD) has
  no instances to refer to: the action is not offered, and its tooltip says why.
- **The background command** (`export_command`): `prostate-cad export <study> --detections
  <run>/detections.json [--zones zones.nrrd] --dicom-seg --dicom-sr --out <step>/out`, run in the
  panel's ProcessRunner; the zones are the (possibly hand-edited) zones the panel shows.
- **The import** (`start_import`): the written SEG and SR are moved out of the step's folder (which
  is removed once the step is done) into a folder of their own and copied into the database by the
  DICOM indexer in its background thread (dicom_database.DatabaseImport); the panel removes that
  folder once the indexer is done (`finish_import`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import SimpleITK as sitk

from ProstateLesionCADLib.errors import CaseError, FormatError
from ProstateLesionCADLib.export.results import SEG_FILE, SR_FILE
from ProstateLesionCADLib.study.case_json import CASE_JSON

from . import dicom_database
from .cad_logic import DICOM_EXPORT_STEP
from .step_arguments import DicomExportArguments

STEP = DICOM_EXPORT_STEP  # the panel's name for the step (capabilities, requirements, status label, runner)
STUDY_FOLDER = "study"
STUDY_CASE = "study-case.json"
ZONES_FILE = "zones.nrrd"
EXPORTED = (SEG_FILE, SR_FILE)


def has_instances(node) -> bool:
    return bool(node is not None and (node.GetAttribute(dicom_database.INSTANCE_UIDS_ATTRIBUTE) or "").split())


def loaded_folder(params) -> Optional[Path]:
    """The DICOM folder the project's loader read the study from (`CadLogic.load_study`); None otherwise."""
    folder = Path(params.dicom_folder) if params.dicom_folder else None
    if folder is None or not folder.is_dir() or (folder / CASE_JSON).is_file():
        return None  # a case.json folder holds image files, not the DICOM the SEG must refer to
    return folder


def export_availability(params, database_open: bool) -> tuple[bool, str]:
    """(offered?, tooltip) of "Export to DICOM database" for the panel's inputs and detections."""
    t2 = params.t2
    if t2 is None:
        return False, "Select a T2 volume first."
    if not has_instances(t2) and loaded_folder(params) is None:
        return False, (f"'{t2.GetName()}' was not loaded from DICOM (it has no DICOM instance UIDs), so a DICOM SEG "
                       "and SR have no T2 images to refer to: load the study from DICOM to export.")
    if not database_open:
        return False, "Slicer's DICOM database is not open: open it in the DICOM module first."
    if not params.detections_file or not Path(params.detections_file).is_file():
        return False, "Detect lesions (or load a detections file) first."
    return True, ("Write the lesions and zones as a DICOM SEG and a DICOM SR measurement report (a new series "
                  "in the T2's study) and import them into Slicer's DICOM database.")


def _link(source: str, target: Path) -> None:
    try:
        os.symlink(source, target)
    except OSError:  # no symbolic links here (e.g. Windows without the privilege): a copy does the same
        shutil.copy2(source, target)


def write_study_source(files: Sequence[str], t2_series_uid: str, case_id: str, work_dir) -> Path:
    """A case file over the study's files (linked into the step's folder) choosing the T2's own series."""
    work = Path(work_dir)
    folder = work / STUDY_FOLDER
    folder.mkdir(parents=True, exist_ok=False)
    for index, path in enumerate(files):
        # numbered names: the database's files of different series may share a file name
        _link(str(path), folder / f"{index:06d}{Path(path).suffix}")
    case = work / STUDY_CASE
    case.write_text(json.dumps({"case_id": case_id, "dicom": STUDY_FOLDER, "choose": {"T2": t2_series_uid}}),
                    encoding="utf-8")
    return case


def study_source(params, work_dir, database=None) -> Path:
    """What `prostate-cad export` reads the study from: the database's files of the T2's study (via a case
    file in work_dir), or the DICOM folder the study was loaded from."""
    t2 = params.t2
    if has_instances(t2):
        if database is None:
            raise CaseError("Slicer's DICOM database is not open: open it in the DICOM module first.")
        files, series_uid = dicom_database.volume_study_files(database, t2)
        return write_study_source(files, series_uid, params.case_id or t2.GetName(), work_dir)
    folder = loaded_folder(params)
    if folder is None:
        raise CaseError(export_availability(params, database is not None)[1])
    return folder


def export_command(source, detections, out_dir, zones_file=None, python: Optional[str] = None) -> list[str]:
    """The argv writing the SEG and SR of a run (`prostate-cad export ... --dicom-seg --dicom-sr`)."""
    return DicomExportArguments(Path(source), Path(detections), Path(out_dir),
                                Path(zones_file) if zones_file is not None else None).command(python=python)


def panel_export_command(cad, work_dir, database=None, python: Optional[str] = None) -> list[str]:
    """The step's argv for the panel's T2, shown detections and zones; its inputs are written into work_dir."""
    p = cad.params
    offered, why = export_availability(p, database_open=True)  # the database itself: study_source, the import
    if not offered:
        raise CaseError(why)
    work = Path(work_dir)
    source = study_source(p, work, database)
    zones = cad.zones_image()
    zones_file = None
    if zones is not None:
        zones_file = work / ZONES_FILE
        sitk.WriteImage(zones, str(zones_file), True)
    return export_command(source, p.detections_file, work / "out", zones_file, python)


def exported_files(out_dir) -> list[Path]:
    """The SEG and SR a finished export step wrote."""
    files = [Path(out_dir) / name for name in EXPORTED]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FormatError(f"{out_dir}: the export wrote no {' or '.join(missing)}.")
    return files


def start_import(out_dir, database, indexer) -> "dicom_database.DatabaseImport":
    """Start copying the written SEG and SR into Slicer's DICOM database in the indexer's thread (in
    Slicer `ctk.ctkDICOMIndexer()`); they are first moved to a folder of their own, which outlives the
    step's folder until `finish_import`."""
    files = exported_files(out_dir)
    if database is None:
        raise CaseError("Slicer's DICOM database is not open: open it in the DICOM module first.")
    folder = Path(tempfile.mkdtemp(prefix="ProstateLesionCAD-dicom-seg-"))
    for path in files:
        shutil.move(str(path), folder / path.name)
    return dicom_database.DatabaseImport(indexer, database, folder, copy_files=True)


def finish_import(job: "dicom_database.DatabaseImport") -> list[str]:
    """Once the indexer is done: the names of the files it was given; their folder is removed."""
    names = sorted(path.name for path in Path(job.folder).iterdir())
    shutil.rmtree(job.folder, ignore_errors=True)
    return names
