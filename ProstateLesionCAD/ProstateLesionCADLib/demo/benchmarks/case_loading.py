"""Bench: loading studies — the embedded NRRD sample and the real ProstateX DICOM studies."""

from __future__ import annotations

import os
from pathlib import Path

from ._measure import measure, table

TITLE = "Case loading"


def _load(path: str) -> str:
    from ...study.loading import load_case

    case = load_case(path)
    parts = list(case.roles_present())
    if case.dwi:
        parts.append("b=" + "/".join(f"{b:g}" for b in sorted(case.dwi)))
    if case.dce:
        parts.append(f"{len(case.dce)} DCE time points")
    return ", ".join(parts)


def _studies() -> list[tuple[str, Path]]:
    from ...resources import resources_dir, sample_case_dir

    shared = Path(os.environ.get("PROSTATE_CAD_SHARED", resources_dir().parent.parent / "shared"))
    found = [("sample ProstateX-0000 (NRRD + case.json)", sample_case_dir())]
    for name in ("ProstateX-0000", "ProstateX-0218"):
        folder = shared / "data" / "prostatex" / name
        if folder.is_dir():
            files = sum(1 for p in folder.rglob("*") if p.is_file())
            found.append((f"{name} DICOM ({files} files)", folder))
    return found


def run(out_dir, progress) -> str:
    rows = []
    studies = _studies()
    for i, (label, path) in enumerate(studies):
        progress(i / len(studies), f"loading {label}")
        m = measure(_load, str(path))
        rows.append({"study": label, "seconds": f"{m['seconds']:.1f}", "peak MB": f"{m['peak_mb']:.0f}",
                     "roles": m["error"] or m["result"]})
    progress(1.0, "case loading measured")
    note = ("DICOM: header-only scan of every file, then pixel data of the picked series only. "
            "Real studies are read from ../shared when present.")
    return table(rows, ["study", "seconds", "peak MB", "roles"]) + "\n" + note + "\n"
