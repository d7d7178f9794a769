"""The detections to evaluate: one detections file, or a folder of `prostate-cad detect` runs.

A folder holding its own `detections.json` (what a batch `detect` leaves: every finished case)
is read as that file; otherwise as every `detections.json` one level below it
(`<folder>/<run>/detections.json`, as `detect --out <folder>/<case>` leaves them), merged into one set. The runs must
come from one model and name each case once.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import FormatError
from ..formats import DetectionSet, read_detections

DETECTIONS_FILE = "detections.json"


def load_detections(path: str | Path) -> DetectionSet:
    path = Path(path)
    if not path.is_dir():
        return read_detections(path)
    if (path / DETECTIONS_FILE).is_file():  # a batch's output folder: its merged file lists every run
        return read_detections(path / DETECTIONS_FILE)
    files = sorted(path.glob(f"*/{DETECTIONS_FILE}"))
    if not files:
        raise FormatError(f"{path}: no {DETECTIONS_FILE} in the folder or its sub-folders.")
    merged = DetectionSet([])
    seen: dict[str, Path] = {}
    for file in files:
        dset = read_detections(file)
        if merged.model is None:
            merged.model = dset.model
        elif dset.model and (dset.model.get("name"), dset.model.get("version")) != \
                (merged.model.get("name"), merged.model.get("version")):
            raise FormatError(f"{file} comes from model {dset.model.get('name')!r} {dset.model.get('version')!r}, "
                              f"the other runs in {path} from {merged.model.get('name')!r} "
                              f"{merged.model.get('version')!r}; evaluate one model at a time.")
        for case in dset.cases:
            if case.case_id in seen:
                raise FormatError(f"Case {case.case_id!r} is in both {seen[case.case_id]} and {file}.")
            seen[case.case_id] = file
            merged.cases.append(case)
    return merged
