"""The study an export refers to: its T2 grid and, when it came from DICOM, the T2 instances.

A DICOM folder (or a case JSON whose T2 comes from its `dicom` folder) gives the T2 series
picked by the loader's rule (`study.dicom_roles.plan_study`, headers only) and its grid,
built from the same geometry the loader builds the T2 image from, so masks computed on it
sit on the T2 voxels a detection run saw. Image-file cases (a case JSON with a `T2` file, or
a T2 image file) give the grid only, and `no_dicom` says in one sentence why there is no
DICOM to refer to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pydicom
import SimpleITK as sitk

from ..errors import CaseError
from ..formats import load_json_object
from ..image_files import is_image_file, read_image_file
from ..study.case_json import CASE_JSON
from ..study.dicom_roles import Volume, plan_study

SEG_SERIES_OFFSET = 1  # the SEG takes the first series number above the study's, the SR the next


@dataclass
class DicomT2:
    """The T2 series of a DICOM study, as SEG and SR reference it."""

    datasets: list[pydicom.Dataset]  # headers only: one per file (classic) or the one multi-frame object
    frame_of_slice: list[int]  # k (slice index of the T2 grid) -> frame index among `datasets`' frames
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    next_series_number: int

    @property
    def frames(self) -> int:
        return sum(int(getattr(ds, "NumberOfFrames", 1) or 1) for ds in self.datasets)


@dataclass
class ExportSource:
    case_id: str
    t2_grid: sitk.Image  # the T2 geometry (voxel values not needed)
    dicom: Optional[DicomT2] = None
    no_dicom: str = ""  # why there is no DICOM source (one sentence), when dicom is None


def _grid(volume: Volume) -> sitk.Image:
    g = volume.geometry
    assert g is not None
    grid = sitk.Image([int(v) for v in g.size], sitk.sitkUInt8)
    grid.SetSpacing(g.spacing)
    grid.SetOrigin(g.origin)
    grid.SetDirection(g.direction)
    return grid


def dicom_source(root: str | os.PathLike, choose: Optional[dict] = None) -> ExportSource:
    """The T2 of a DICOM study folder: its grid, its instances (headers only) and free series numbers."""
    plan = plan_study(root, choose)
    t2 = plan.picks["T2"]
    assert isinstance(t2, Volume)
    frames = [s.frame for s in t2.slices]
    if all(f is None for f in frames):
        datasets = [pydicom.dcmread(s.path, stop_before_pixels=True) for s in t2.slices]
        frame_of_slice = list(range(len(datasets)))
    elif len({s.path for s in t2.slices}) == 1:
        datasets = [pydicom.dcmread(t2.slices[0].path, stop_before_pixels=True)]
        frame_of_slice = [int(f) for f in frames]  # type: ignore[arg-type]
    else:
        raise CaseError(f"{t2.series.label()} spreads its slices over several multi-frame files; "
                        f"a DICOM SEG can refer to one multi-frame T2 object or to single-frame images only.")
    first = datasets[0]
    for_uid = str(getattr(first, "FrameOfReferenceUID", "") or "")
    if not for_uid:
        raise CaseError(f"{t2.series.label()} has no FrameOfReferenceUID, so a DICOM SEG cannot be placed on it.")
    numbers = [s.number for s in plan.series if s.number is not None]
    dicom = DicomT2(datasets=datasets, frame_of_slice=frame_of_slice, series_uid=t2.series.uid,
                    study_uid=str(first.StudyInstanceUID), frame_of_reference_uid=for_uid,
                    next_series_number=max(numbers, default=0) + SEG_SERIES_OFFSET)
    return ExportSource(case_id=plan.case_id, t2_grid=_grid(t2), dicom=dicom)


def _case_json_path(path: Path) -> Optional[Path]:
    if path.is_dir() and (path / CASE_JSON).is_file():
        return path / CASE_JSON
    if path.is_file() and path.suffix.lower() == ".json":
        return path
    return None


def find_source(path: str | os.PathLike) -> ExportSource:
    """The export source of a case given as `prostate-cad detect` takes it, or a T2 image file."""
    path = Path(path)
    if not path.exists():
        raise CaseError(f"{path}: no such file or folder.")
    if path.is_file() and is_image_file(path):
        return ExportSource(case_id=path.name.split(".")[0], t2_grid=read_image_file(path, "T2 image"),
                            no_dicom=f"{path} is an image file, not a DICOM study, so there are no T2 instances "
                                     f"for a DICOM SEG or SR to refer to; give the DICOM study folder instead.")
    json_path = _case_json_path(path)
    if json_path is None:
        if path.is_dir():
            return dicom_source(path)
        raise CaseError(f"{path}: expected a DICOM folder, a folder with case.json, a case .json file "
                        f"or a T2 image file.")
    data = load_json_object(json_path, CaseError, "case file")
    if isinstance(data.get("dicom"), str) and data["dicom"] and not data.get("T2"):
        folder = json_path.parent / data["dicom"]  # an absolute path stays absolute
        choose = data.get("choose") if isinstance(data.get("choose"), dict) else None
        source = dicom_source(folder, choose)
        if isinstance(data.get("case_id"), str) and data["case_id"]:
            source.case_id = data["case_id"]
        return source
    from ..study.loading import load_case

    case = load_case(json_path)
    return ExportSource(case_id=case.case_id, t2_grid=case.t2,
                        no_dicom=f"{json_path} gives the T2 as an image file, not as DICOM, so there are no T2 "
                                 f"instances for a DICOM SEG or SR to refer to; give the DICOM study folder instead.")
