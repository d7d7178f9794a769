"""A study given as image files per role, described by a small case JSON (`case.json`).

Format ``prostate-cad-case/1`` (paths relative to the JSON file; every key but
``format`` optional, but a T2 is needed from ``T2`` or ``dicom``)::

    {"format": "prostate-cad-case/1",
     "case_id": "ProstateX-0000",
     "T2": "t2.nrrd",
     "ADC": "adc.nrrd",
     "DWI": {"50": "dwi-b50.nrrd", "400": "dwi-b400.nrrd", "800": "dwi-b800.nrrd"},
     "DWI_COMPUTED": {"1000": "dwi-computed-b1000.nrrd"},
     "KTRANS": "ktrans.nrrd",
     "DCE": {"files": ["dce-000.nrrd", "dce-001.nrrd"], "times_s": [0.0, 4.2]},
     "prostate": "prostate.nrrd",
     "zones": "zones.nrrd",
     "dicom": "dicom/",
     "choose": {"ADC": "9"},
     "series": {"used": [...], "unused": [...]}}

- Images: NRRD, NIfTI or MHA, 3D, read with SimpleITK (so in LPS); loaded as float32.
  ``DCE`` may instead give one 4D file: ``{"file": "dce.nii.gz", "times_s": [...]}``;
  ``times_s`` (seconds from the first time point) is optional.
- ``prostate`` and ``zones`` (1 = CG, 2 = PZ) are label maps on the T2 grid.
- ``dicom`` names a DICOM folder loaded first (with the optional ``choose`` series
  overrides of `dicom_roles`); roles given as files then replace or add to it (e.g. a
  Ktrans map computed elsewhere).
- ``series`` records where each role came from (written by `write_case_files`); it is
  informational. Unknown keys are ignored.

`write_case_files(case, out_dir)` writes any loaded case in this format, one compressed
NRRD per image, integer-valued images as int16/uint16 (as stored in the DICOM) and
everything else as float32, so a converted case reloads with identical voxels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk

from .case import Case, SeriesInfo
from ..errors import CaseError, FormatError, ParameterError
from ..formats import load_json_object
from ..image_files import check_labels, read_image_file, same_grid, write_image_file
from ..output_files import staged_output_dir
from ..progress import ProgressCallback, silent, sub_progress

CASE_FORMAT = "prostate-cad-case/1"
CASE_JSON = "case.json"  # the case file's name inside a case folder


# ---------------------------------------------------------------- reading case JSON

def _load(path: Path) -> dict:
    data = load_json_object(path, CaseError, "case file")
    if data.get("format") != CASE_FORMAT:
        raise FormatError(f"{path}: unknown format {data.get('format')!r}; expected {CASE_FORMAT!r}.")
    return data


def _file(base: Path, value: Any, key: str, json_path: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise FormatError(f"{json_path}: {key!r} must be a file name (string), got {value!r}.")
    p = Path(value)
    return p if p.is_absolute() else base / p


def _b_map(data: dict, key: str, base: Path, json_path: Path) -> dict[float, Path]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FormatError(f"{json_path}: {key!r} must map b-values to files, e.g. {{\"800\": \"b800.nrrd\"}}.")
    result = {}
    for b, name in value.items():
        try:
            b_value = float(b)
        except ValueError:
            raise FormatError(f"{json_path}: {key!r} key {b!r} is not a b-value in s/mm².") from None
        if not np.isfinite(b_value) or b_value < 0:
            raise FormatError(f"{json_path}: {key!r} key {b!r} is not a b-value in s/mm².")
        result[b_value] = _file(base, name, f"{key} b={b}", json_path)
    return result


def _series_infos(entries: Any) -> list[SeriesInfo]:
    infos = []
    for e in entries if isinstance(entries, list) else []:
        if isinstance(e, dict) and isinstance(e.get("role"), str):
            number = e.get("series_number")
            infos.append(SeriesInfo(role=e["role"], description=str(e.get("description", "")),
                                    source=str(e.get("source", "")), reason=str(e.get("reason", "")),
                                    series_number=int(number) if isinstance(number, int) else None,
                                    acquisition_time=e.get("acquisition_time")))
    return infos


def read_case_json(path: str | os.PathLike, choose: Optional[dict] = None,
                   progress: Optional[ProgressCallback] = None) -> Case:
    """Load a case from a `prostate-cad-case/1` JSON file (see module docstring)."""
    progress = progress or silent
    json_path = Path(path)
    data = _load(json_path)
    base = json_path.parent
    case_id = data.get("case_id") or (base.name if json_path.name == CASE_JSON else json_path.stem)
    if not isinstance(case_id, str):
        raise FormatError(f"{json_path}: 'case_id' must be a string.")

    merged_choose = dict(data.get("choose") or {})
    if not isinstance(data.get("choose", {}), dict):
        raise FormatError(f"{json_path}: 'choose' must map roles to series numbers or UIDs.")
    merged_choose.update(choose or {})
    case: Optional[Case] = None
    file_progress = progress
    if data.get("dicom") is not None:
        from .dicom_roles import load_dicom_case

        case = load_dicom_case(_file(base, data["dicom"], "dicom", json_path), merged_choose,
                               sub_progress(progress, 0.0, 0.8))
        file_progress = sub_progress(progress, 0.8, 1.0)
    elif merged_choose:
        raise ParameterError(f"{json_path}: a series choice only applies to DICOM studies, "
                             f"and this case gives image files (no 'dicom' folder).")

    recorded = data.get("series") if isinstance(data.get("series"), dict) else {}
    used = _series_infos(recorded.get("used"))
    unused = _series_infos(recorded.get("unused"))

    files: dict[str, str] = {}

    def note(role: str, file: Path) -> None:
        """Record a role read from a file, unless case.json already says where it came from."""
        files[role] = str(file)
        if not any(u.role == role for u in used) or data.get("dicom") is not None:
            used.append(SeriesInfo(role=role, description=file.name, source=str(file), reason="file"))

    file_progress(0.0, "reading case image files")
    if "T2" in data:
        t2_path = _file(base, data["T2"], "T2", json_path)
        t2 = read_image_file(t2_path, "T2 image")
        note("T2", t2_path)
        if case is None:
            case = Case(case_id=case_id, t2=t2)
        else:
            case.t2 = t2
    if case is None:
        raise CaseError(f"{json_path}: no 'T2' image and no 'dicom' folder; the T2 image is required.")
    case.case_id = case_id
    if "ADC" in data:
        p = _file(base, data["ADC"], "ADC", json_path)
        case.adc = read_image_file(p, "ADC image")
        note("ADC", p)
    if "KTRANS" in data:
        p = _file(base, data["KTRANS"], "KTRANS", json_path)
        case.ktrans = read_image_file(p, "KTRANS image")
        note("KTRANS", p)
    from .dicom_roles import format_b

    for b, p in _b_map(data, "DWI", base, json_path).items():
        case.dwi[b] = read_image_file(p, f"DWI b={format_b(b)} image")
        note(f"DWI:{format_b(b)}", p)
    for b, p in _b_map(data, "DWI_COMPUTED", base, json_path).items():
        case.dwi_computed[b] = read_image_file(p, f"computed DWI b={format_b(b)} image")
        note(f"DWI_COMPUTED:{format_b(b)}", p)
    if "DCE" in data:
        case.dce, case.dce_times, dce_files = _read_dce(data["DCE"], base, json_path)
        description = dce_files[0].name if len(dce_files) == 1 else f"{len(dce_files)} files"
        note("DCE", Path(description))
        files["DCE"] = str(dce_files[0])
    file_progress(0.8, "reading masks")
    for key in ("prostate", "zones"):
        if key in data:
            p = _file(base, data[key], key, json_path)
            mask = read_image_file(p, f"{key} mask image")
            if not same_grid(mask, case.t2):
                raise CaseError(f"{p}: the {key} mask is not on the T2 image grid "
                                f"(size {mask.GetSize()} vs {case.t2.GetSize()}, or different origin/spacing/direction).")
            check_labels(mask, p, f"{key} mask image", 2 if key == "zones" else 255)  # zones: 1 = CG, 2 = PZ
            setattr(case, key, sitk.Cast(mask, sitk.sitkUInt8))
    case.files.update(files)
    if data.get("dicom") is None:
        case.used, case.unused = used, unused
    else:  # files replace the DICOM series of their role
        from_files = {n.role for n in used if n.reason == "file"}
        case.used = [u for u in case.used if u.role not in from_files] + [n for n in used if n.reason == "file"]
    file_progress(1.0, "case loaded")
    return case


def _read_dce(value: Any, base: Path, json_path: Path) -> tuple[list[sitk.Image], list[float], list[Path]]:
    if not isinstance(value, dict) or ("files" in value) == ("file" in value):
        raise FormatError(f"{json_path}: 'DCE' must be {{\"files\": [...], \"times_s\": [...]}} "
                          f"or {{\"file\": \"dce4d.nrrd\", \"times_s\": [...]}}.")
    if "files" in value:
        if not isinstance(value["files"], list) or not value["files"]:
            raise FormatError(f"{json_path}: 'DCE' 'files' must be a non-empty list of file names.")
        paths = [_file(base, f, f"DCE file #{i + 1}", json_path) for i, f in enumerate(value["files"])]
        images = [read_image_file(p, f"DCE time point {i + 1} image") for i, p in enumerate(paths)]
    else:
        path = _file(base, value["file"], "DCE file", json_path)
        series = read_image_file(path, "DCE series image", dims=4)
        size = list(series.GetSize())
        images = []
        for t in range(size[3]):
            images.append(sitk.Cast(sitk.Extract(series, size[:3] + [0], [0, 0, 0, t]), sitk.sitkFloat32))
        paths = [path]
    for i, img in enumerate(images[1:], start=2):
        if not same_grid(img, images[0]):
            raise CaseError(f"{paths[min(i - 1, len(paths) - 1)]}: DCE time point {i} has a different image grid "
                            f"than time point 1.")
    times = value.get("times_s")
    if times is None:
        return images, [], paths
    try:
        times = [float(t) for t in times]
    except (TypeError, ValueError):
        raise FormatError(f"{json_path}: 'DCE' 'times_s' must be a list of numbers (seconds).") from None
    if len(times) != len(images):
        raise FormatError(f"{json_path}: 'DCE' has {len(images)} time points but {len(times)} 'times_s' values.")
    if any(b < a for a, b in zip(times, times[1:])):
        raise FormatError(f"{json_path}: 'DCE' 'times_s' must be in increasing order.")
    return images, times, paths


# ---------------------------------------------------------------- writing

def _info_dict(info: SeriesInfo) -> dict:
    entry = {"role": info.role, "description": info.description, "source": info.source, "reason": info.reason}
    if info.series_number is not None:
        entry["series_number"] = info.series_number
    if info.acquisition_time:
        entry["acquisition_time"] = info.acquisition_time
    return entry


def write_case_files(case: Case, out_dir: str | os.PathLike, progress: Optional[ProgressCallback] = None) -> Path:
    """Write `case` as compressed NRRD per role + case.json into `out_dir`; returns the JSON path.

    Files appear only when everything was written (staged output). Names: t2.nrrd,
    adc.nrrd, dwi-b<b>.nrrd, dwi-computed-b<b>.nrrd, ktrans.nrrd, dce-<ttt>.nrrd,
    prostate.nrrd, zones.nrrd.
    """
    from .dicom_roles import format_b

    progress = progress or silent
    jobs: list[tuple[str, sitk.Image]] = [("t2.nrrd", case.t2)]
    data: dict[str, Any] = {"format": CASE_FORMAT, "case_id": case.case_id, "T2": "t2.nrrd"}
    if case.adc is not None:
        data["ADC"] = "adc.nrrd"
        jobs.append(("adc.nrrd", case.adc))
    if case.dwi:
        data["DWI"] = {}
        for b, img in sorted(case.dwi.items()):
            name = f"dwi-b{format_b(b)}.nrrd"
            data["DWI"][format_b(b)] = name
            jobs.append((name, img))
    if case.dwi_computed:
        data["DWI_COMPUTED"] = {}
        for b, img in sorted(case.dwi_computed.items()):
            name = f"dwi-computed-b{format_b(b)}.nrrd"
            data["DWI_COMPUTED"][format_b(b)] = name
            jobs.append((name, img))
    if case.ktrans is not None:
        data["KTRANS"] = "ktrans.nrrd"
        jobs.append(("ktrans.nrrd", case.ktrans))
    if case.dce:
        names = [f"dce-{i:03d}.nrrd" for i in range(len(case.dce))]
        data["DCE"] = {"files": names}
        if len(case.dce_times) == len(case.dce):
            data["DCE"]["times_s"] = [round(float(t), 3) for t in case.dce_times]
        jobs.extend(zip(names, case.dce))
    for key in ("prostate", "zones"):
        mask = getattr(case, key)
        if mask is not None:
            data[key] = f"{key}.nrrd"
            jobs.append((f"{key}.nrrd", sitk.Cast(mask, sitk.sitkUInt8)))
    data["series"] = {"used": [_info_dict(u) for u in case.used], "unused": [_info_dict(u) for u in case.unused]}
    out = Path(out_dir)
    with staged_output_dir(out) as stage:
        for i, (name, image) in enumerate(jobs):
            progress(i / (len(jobs) + 1), f"writing {name}")
            write_image_file(image, stage / name)
        with open(stage / CASE_JSON, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
            handle.write("\n")
    progress(1.0, f"case written to {out}")
    return out / CASE_JSON
