"""DICOM media (CD, DVD, USB export): the files a DICOMDIR lists.

A DICOMDIR is the index of a file-set: patient, study, series and image records, each
image record naming its file by ReferencedFileID (path components relative to the
DICOMDIR's folder, upper case on ISO 9660 media). The study is what the records say, not
whatever else lies in the folder: files the DICOMDIR does not reference are not part of
the file-set. File IDs are matched to the names on disk case-insensitively and without an
ISO 9660 version suffix (``IM000001;1``), since copies of media change both.
"""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from ..errors import CaseError

DICOMDIR = "DICOMDIR"


def is_dicomdir(path: str | os.PathLike) -> bool:
    return Path(path).name.upper() == DICOMDIR and Path(path).is_file()


def _on_disk(folder: Path, parts: list[str]) -> Path | None:
    """The file `parts` below `folder`, matching each component as media copies rename it."""
    current = folder
    for part in parts:
        candidate = current / part
        if candidate.exists():
            current = candidate
            continue
        wanted = part.split(";")[0].upper()
        try:
            names = os.listdir(current)
        except OSError:
            return None
        match = next((n for n in sorted(names) if n.split(";")[0].upper() == wanted), None)
        if match is None:
            return None
        current = current / match
    return current if current.is_file() else None


def dicomdir_files(path: str | os.PathLike) -> list[str]:
    """Paths of the files the records of the DICOMDIR at `path` reference.

    A DICOMDIR that cannot be read, or that lists a file missing from the media, is refused
    in one sentence naming it.
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, EOFError) as exc:
        raise CaseError(f"{path}: not a readable DICOMDIR ({exc}).") from None
    records = ds.get("DirectoryRecordSequence")
    if records is None:
        raise CaseError(f"{path}: not a DICOMDIR (no directory records).")
    files: list[str] = []
    missing: list[str] = []
    for record in records:
        file_id = record.get("ReferencedFileID")
        if file_id is None:
            continue
        parts = [str(p) for p in file_id] if isinstance(file_id, (list, pydicom.multival.MultiValue)) else str(file_id).split("\\")
        found = _on_disk(path.parent, [p for p in parts if p])
        if found is None:
            missing.append("/".join(parts))
        else:
            files.append(str(found))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CaseError(f"{path}: lists {missing[0]}{more}, missing from the media; copy the whole medium.")
    return sorted(set(files))
