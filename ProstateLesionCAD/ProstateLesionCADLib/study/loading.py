"""One entry point for every way a study arrives: `load_case(path)`.

- a folder holding ``case.json`` -> image files per role (`case_files`);
- a ``.json`` file -> the same, paths relative to that file;
- any other folder -> a DICOM tree of any depth (`dicom_roles`).

A Ktrans map (never in the scanner's DICOM for ProstateX) can be added from a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .case import Case, SeriesInfo
from ..image_files import read_image_file
from .case_json import read_case_json
from .dicom_roles import load_dicom_case
from ..errors import CaseError
from ..progress import ProgressCallback, silent, sub_progress


def load_case(path: str | os.PathLike, choose: Optional[dict] = None,
              progress: Optional[ProgressCallback] = None,
              ktrans: Optional[str | os.PathLike] = None) -> Case:
    """Load a study from a DICOM folder, a folder with case.json, or a case JSON file.

    `choose` maps roles to series numbers/UIDs overriding the pick rule (DICOM only, see
    `dicom_roles`); `ktrans` is an image file (NRRD/NIfTI/MHA) used as the KTRANS role.
    """
    progress = progress or silent
    path = Path(path)
    if not path.exists():
        raise CaseError(f"{path}: no such file or folder.")
    main = sub_progress(progress, 0.0, 0.95 if ktrans else 1.0)
    if path.is_dir() and (path / "case.json").is_file():
        case = read_case_json(path / "case.json", choose, main)
    elif path.is_file() and path.suffix.lower() == ".json":
        case = read_case_json(path, choose, main)
    elif path.is_dir():
        case = load_dicom_case(path, choose, main)
    else:
        raise CaseError(f"{path}: expected a DICOM folder, a folder with case.json, or a case .json file.")
    if ktrans is not None:
        case.ktrans = read_image_file(ktrans, "KTRANS image")
        case.used = [u for u in case.used if u.role != "KTRANS"]
        case.used.append(SeriesInfo(role="KTRANS", description=Path(ktrans).name, source=str(ktrans), reason="file"))
        progress(1.0, "Ktrans map loaded")
    return case


def _source(info: Optional[SeriesInfo]) -> str:
    if info is None:
        return ""
    if info.series_number is not None:
        return f"series {info.series_number} '{info.description}'"
    return info.description


def _grid(image) -> tuple[str, str]:
    size = "x".join(str(v) for v in image.GetSize())
    spacing = "x".join(f"{round(v, 3):g}" for v in image.GetSpacing())
    return size, f"{spacing} mm"


def role_lines(case: Case) -> list[str]:
    """One line per role: role, b-value or time-point count, size, spacing, source series."""
    from .dicom_roles import format_b

    used = {u.role: u for u in case.used}
    rows: list[tuple[str, str, object, str]] = [("T2", "-", case.t2, _source(used.get("T2")))]
    if case.adc is not None:
        rows.append(("ADC", "-", case.adc, _source(used.get("ADC"))))
    for b, img in sorted(case.dwi.items()):
        rows.append(("DWI", f"b={format_b(b)}", img, _source(used.get(f"DWI:{format_b(b)}"))))
    for b, img in sorted(case.dwi_computed.items()):
        rows.append(("DWI_COMPUTED", f"b={format_b(b)}", img, _source(used.get(f"DWI_COMPUTED:{format_b(b)}"))))
    if case.ktrans is not None:
        rows.append(("KTRANS", "-", case.ktrans, _source(used.get("KTRANS"))))
    if case.dce:
        dce = [u for u in case.used if u.role == "DCE"]
        source = _source(dce[0]) if dce else ""
        numbers = [u.series_number for u in dce if u.series_number is not None]
        if len(dce) > 1 and numbers:
            source = f"series {min(numbers)}-{max(numbers)} '{dce[0].description}' ..."
        if case.dce_times:
            source += f" ({case.dce_times[0]:.1f}-{case.dce_times[-1]:.1f} s)"
        rows.append(("DCE", f"{len(case.dce)} time points", case.dce[0], source))
    for name in ("prostate", "zones"):
        mask = getattr(case, name)
        if mask is not None:
            rows.append((name, "-", mask, "mask"))
    lines = []
    for role, what, image, source in rows:
        size, spacing = _grid(image)
        lines.append(f"{role:<13} {what:<15} {size:<12} {spacing:<18} {source}".rstrip())
    return lines


def unused_lines(case: Case) -> list[str]:
    lines = []
    for u in case.unused:
        number = f"series {u.series_number}" if u.series_number is not None else "series"
        lines.append(f"{number} '{u.description}': {u.reason}")
    return lines
