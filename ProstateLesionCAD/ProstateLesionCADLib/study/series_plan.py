"""The loader's choice of series as data: which series and files each role uses, and which
series were left out and why (`prostate-cad load --json`).

The classification and pick rules are those of `dicom_roles` (headers only, no pixel
data). The description lets another program load each role itself from the DICOM files,
e.g. Slicer's DICOM plugins from its DICOM database, which keeps the DICOM UIDs on the
volumes. A role's files are listed in slice order along the slice normal; a DCE run gives
one entry per time point, in time order. `per_slice_files` is false when the role's
images are not one file per slice (frames of a multi-frame object, or diffusion
directions combined into one image per slice): such a role can only be read with the
project's loader (`load --export`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .case import Case
from .dicom_roles import DceRun, StudyPlan, Volume, _slot_order, format_b, load_dicom_case, plan_study, scan_files
from ..errors import CaseError
from ..progress import ProgressCallback

FORMAT = "prostate-cad-study-plan/1"


def read_file_list(path: str | os.PathLike) -> list[str]:
    """The files named in a list file, one path per line (blank lines ignored)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CaseError(f"{path}: cannot read the file list ({exc.strerror or exc}).") from None
    files = [line.strip() for line in lines if line.strip()]
    if not files:
        raise CaseError(f"{path}: the file list names no files.")
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CaseError(f"{path}: lists {missing[0]}{more}, which does not exist.")
    return files


def _root(files: list[str]) -> Path:
    """The folder holding all the files (names the study in messages)."""
    return Path(os.path.commonpath([str(Path(f).resolve().parent) for f in files]))


def plan_files(files: list[str], choose: Optional[dict] = None,
               progress: Optional[ProgressCallback] = None) -> StudyPlan:
    """Classify the series of the given files (one study) and pick one per role, as for a folder."""
    return plan_study(_root(files), choose, progress, series=scan_files(files, progress))


def load_files(files: list[str], choose: Optional[dict] = None,
               progress: Optional[ProgressCallback] = None) -> Case:
    """Load a study given as its DICOM files, with the rules used for a folder."""
    return load_dicom_case(_root(files), choose, progress, series=scan_files(files))


def _per_slice(volume: Volume) -> bool:
    paths = [s.path for s in volume.slices]
    return all(s.frame is None and not s.combine for s in volume.slices) and len(set(paths)) == len(paths)


def _series_fields(volume: Volume) -> dict:
    series = volume.series
    return {"series_uid": series.uid, "series_number": series.number, "description": series.description,
            "files": [os.path.abspath(s.path) for s in volume.slices], "per_slice_files": _per_slice(volume)}


def describe_plan(plan: StudyPlan) -> dict:
    """The plan as a JSON-ready dict (FORMAT): case, study, roles with their files, rejected series."""
    first = plan.series[0].first if plan.series else None
    roles = []
    for slot, pick in sorted(plan.picks.items(), key=lambda kv: _slot_order(kv[0])):
        role, _, _ = slot.partition(":")
        entry: dict = {"role": role, "slot": slot, "reason": plan.reasons.get(slot, "")}
        if isinstance(pick, DceRun):
            start = pick.volumes[0].time_s
            entry["time_points"] = [
                {"index": i, "time_s": (round(float(v.time_s - start), 3)
                                        if start is not None and v.time_s is not None else None),
                 **_series_fields(v)} for i, v in enumerate(pick.volumes)]
        else:
            if pick.b_value is not None:
                entry["b_value"] = float(pick.b_value)
                entry["b"] = format_b(pick.b_value)
            entry.update(_series_fields(pick))
            if pick.note:
                entry["note"] = pick.note
        roles.append(entry)
    rejected = [{"series_uid": u.source, "series_number": u.series_number, "description": u.description,
                 "as": u.role, "reason": u.reason} for u in plan.unused]
    return {"format": FORMAT, "case_id": plan.case_id,
            "patient_id": first.patient_id if first else "", "study_uid": first.study_uid if first else "",
            "roles": roles, "rejected": rejected}
