"""One entry point for every way a study arrives: `load_case(path)`.

- a folder holding ``case.json`` -> image files per role (`case_files`);
- a ``.json`` file -> the same, paths relative to that file;
- any other folder -> a DICOM tree of any depth (`dicom_roles`);
- a DICOMDIR file -> the DICOM files its records reference (media);
- a PI-CAI case reference ``<folder>/<patient>_<study>`` (or its ``_t2w.mha``) -> `picai_archive`.

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
from .dicomdir import is_dicomdir
from .picai_archive import is_picai_case, load_picai_case
from .validation import check_case
from ..errors import CaseError
from ..progress import ProgressCallback, silent, sub_progress


def load_case(path: str | os.PathLike, choose: Optional[dict] = None,
              progress: Optional[ProgressCallback] = None,
              ktrans: Optional[str | os.PathLike] = None) -> Case:
    """Load a study from a DICOM folder or DICOMDIR, a folder with case.json, or a case JSON file.

    `choose` maps roles to series numbers/UIDs overriding the pick rule (DICOM only, see
    `dicom_roles`); `ktrans` is an image file (NRRD/NIfTI/MHA) used as the KTRANS role.
    """
    progress = progress or silent
    path = Path(path)
    if not path.exists() and not is_picai_case(path):
        raise CaseError(f"{path}: no such file or folder.")
    main = sub_progress(progress, 0.0, 0.95 if ktrans else 1.0)
    if is_picai_case(path):
        case = load_picai_case(path, main)
    elif path.is_dir() and (path / "case.json").is_file():
        case = read_case_json(path / "case.json", choose, main)
    elif path.is_file() and path.suffix.lower() == ".json":
        case = read_case_json(path, choose, main)
    elif path.is_dir() or is_dicomdir(path):
        case = load_dicom_case(path, choose, main)
    else:
        raise CaseError(f"{path}: expected a DICOM folder, a folder with case.json, or a case .json file (or a DICOMDIR).")
    if ktrans is not None:
        case.ktrans = read_image_file(ktrans, "KTRANS image")
        case.used = [u for u in case.used if u.role != "KTRANS"]
        case.used.append(SeriesInfo(role="KTRANS", description=Path(ktrans).name, source=str(ktrans), reason="file"))
        progress(1.0, "Ktrans map loaded")
    check_case(case, path)  # finite values, plausible grids, every sequence overlapping the T2
    return case

