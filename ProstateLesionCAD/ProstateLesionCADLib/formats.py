"""Readers/writers of the exchange formats of ARCHITECTURE.md.

`prostate-cad-detections/1` and `prostate-cad-ground-truth/1`: JSON, one file for one or
many cases, LPS millimetres, optional paths relative to the JSON file. Readers reject an
unknown `format` with a clear message and ignore unknown keys.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import FormatError
from .output_files import atomic_file

DETECTIONS_FORMAT = "prostate-cad-detections/1"
GROUND_TRUTH_FORMAT = "prostate-cad-ground-truth/1"
GGG_CLASSES = (0, 1, 2, 3)  # 0 benign, 1, 2, 3 = GGG3 or higher


@dataclass
class Detection:
    id: int
    ggg: int
    score: float
    center_lps: tuple[float, float, float]
    box_lps: Optional[tuple[tuple[float, float, float], tuple[float, float, float]]] = None
    class_scores: Optional[dict[str, float]] = None


@dataclass
class DetectionCase:
    case_id: str
    detections: list[Detection] = field(default_factory=list)
    probability_map: Optional[Path] = None  # absolute once read


@dataclass
class DetectionSet:
    cases: list[DetectionCase]
    model: Optional[dict[str, Any]] = None

    def by_case(self) -> dict[str, DetectionCase]:
        return {c.case_id: c for c in self.cases}


@dataclass
class Lesion:
    id: int
    ggg: int
    center_lps: tuple[float, float, float]  # what matching measures to; annotations: the mask's box centre
    label: Optional[int] = None
    seed_lps: Optional[tuple[float, float, float]] = None  # the clicked/listed point a mask was grown from


@dataclass
class GroundTruthCase:
    case_id: str
    lesions: list[Lesion] = field(default_factory=list)
    patient_ggg: Optional[int] = None
    lesion_mask: Optional[Path] = None  # absolute once read


@dataclass
class GroundTruthSet:
    cases: list[GroundTruthCase]

    def by_case(self) -> dict[str, GroundTruthCase]:
        return {c.case_id: c for c in self.cases}


# ---------------------------------------------------------------- reading helpers

def load_json_object(path: Path, missing: type[Exception] = FormatError, what: str = "file") -> dict:
    """A JSON file holding an object, or one clear sentence (`missing` when it does not exist)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise missing(f"{path}: {what} not found.") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: is a folder, not a JSON {what}.") from None
    except UnicodeDecodeError:
        raise FormatError(f"{path}: not UTF-8 text, so not a JSON {what}.") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a JSON object at the top level.")
    return data


def _check_format(data: dict, expected: str, path: Path) -> None:
    fmt = data.get("format")
    if fmt != expected:
        raise FormatError(f"{path}: unknown format {fmt!r}; expected {expected!r}.")
    if not isinstance(data.get("cases"), list):
        raise FormatError(f"{path}: 'cases' must be a list.")


def _point(value: Any, what: str, path: Path) -> tuple[float, float, float]:
    try:
        point = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise FormatError(f"{path}: {what} must be three numbers (LPS mm), got {value!r}.") from None
    if len(point) != 3 or not all(math.isfinite(v) for v in point):
        raise FormatError(f"{path}: {what} must be three finite numbers (LPS mm), got {value!r}.")
    return point  # type: ignore[return-value]


def _ggg(value: Any, what: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or int(value) != value:
        raise FormatError(f"{path}: {what} must be an integer GGG class 0..3, got {value!r}.")
    g = int(value)
    if g < 0 or g > 5:
        raise FormatError(f"{path}: {what} must be a GGG class 0..3 (4 and 5 count as 3), got {g}.")
    return min(g, 3)


def _whole(value: Any, what: str, path: Path) -> int:
    """A whole number (an id or a label): 3 or 3.0, never "abc", null, true or 2.5."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or int(value) != value:
        raise FormatError(f"{path}: {what} must be a whole number, got {value!r}.")
    return int(value)


def _list(value: Any, what: str, path: Path) -> list:
    """A JSON list (a missing or null value is an empty one)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise FormatError(f"{path}: {what} must be a list, got {value!r}.")
    return value


def _class_scores(value: Any, what: str, path: Path) -> Optional[dict[str, float]]:
    if value is None:
        return None
    bad = not isinstance(value, dict) or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value.values())
    if bad:
        raise FormatError(f"{path}: {what} must map each GGG class to a finite number, got {value!r}.")
    return {str(k): float(v) for k, v in value.items()}


def _relative(base: Path, value: Optional[str], what: str = "a file name") -> Optional[Path]:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise FormatError(f"{base}: {what} must be a file name, got {value!r}.")
    p = Path(value)
    return p if p.is_absolute() else (base.parent / p)


def _case_id(entry: Any, index: int, path: Path) -> str:
    if not isinstance(entry, dict) or not isinstance(entry.get("case_id"), str) or not entry["case_id"]:
        raise FormatError(f"{path}: case #{index + 1} has no 'case_id' string.")
    return entry["case_id"]


def _read_cases(path: Path, expected_format: str) -> tuple[dict, list[tuple[str, dict]]]:
    """Load, check the format, and return (data, [(case_id, entry)]) with unique case ids."""
    data = load_json_object(path)
    _check_format(data, expected_format, path)
    cases, seen = [], set()
    for i, entry in enumerate(data["cases"]):
        cid = _case_id(entry, i, path)
        if cid in seen:
            raise FormatError(f"{path}: case {cid!r} appears twice.")
        seen.add(cid)
        cases.append((cid, entry))
    return data, cases


def read_detections(path: str | Path) -> DetectionSet:
    path = Path(path)
    data, entries = _read_cases(path, DETECTIONS_FORMAT)
    cases = []
    for cid, entry in entries:
        dets = []
        for j, d in enumerate(_list(entry.get("detections"), f"case {cid!r} 'detections'", path)):
            where = f"case {cid!r} detection #{j + 1}"
            if not isinstance(d, dict):
                raise FormatError(f"{path}: {where} must be an object.")
            try:
                score = float(d["score"])
            except (KeyError, TypeError, ValueError):
                raise FormatError(f"{path}: {where} needs a numeric 'score'.") from None
            if not math.isfinite(score):
                raise FormatError(f"{path}: {where} has a non-finite score.")
            if "center_lps" not in d:
                raise FormatError(f"{path}: {where} needs 'center_lps'.")
            if "ggg" not in d:
                raise FormatError(f"{path}: {where} needs 'ggg'.")
            box = d.get("box_lps")
            if box is not None:
                if not isinstance(box, (list, tuple)) or len(box) != 2:
                    raise FormatError(f"{path}: {where} 'box_lps' must be [[xmin,ymin,zmin],[xmax,ymax,zmax]].")
                box = (_point(box[0], f"{where} box_lps[0]", path), _point(box[1], f"{where} box_lps[1]", path))
            dets.append(Detection(
                id=_whole(d.get("id", j + 1), f"{where} 'id'", path), ggg=_ggg(d["ggg"], f"{where} 'ggg'", path),
                score=score, center_lps=_point(d["center_lps"], f"{where} 'center_lps'", path), box_lps=box,
                class_scores=_class_scores(d.get("class_scores"), f"{where} 'class_scores'", path)))
        cases.append(DetectionCase(cid, dets, _relative(path, entry.get("probability_map"),
                                                        f"case {cid!r} 'probability_map'")))
    model = data.get("model") if isinstance(data.get("model"), dict) else None
    return DetectionSet(cases, model)


def read_ground_truth(path: str | Path) -> GroundTruthSet:
    path = Path(path)
    data, entries = _read_cases(path, GROUND_TRUTH_FORMAT)
    cases = []
    for cid, entry in entries:
        lesions = []
        for j, d in enumerate(_list(entry.get("lesions"), f"case {cid!r} 'lesions'", path)):
            where = f"case {cid!r} lesion #{j + 1}"
            if not isinstance(d, dict) or "center_lps" not in d or "ggg" not in d:
                raise FormatError(f"{path}: {where} needs 'center_lps' and 'ggg'.")
            label = d.get("label")
            seed = d.get("seed_lps")
            lesions.append(Lesion(_whole(d.get("id", j + 1), f"{where} 'id'", path),
                                  _ggg(d["ggg"], f"{where} 'ggg'", path),
                                  _point(d["center_lps"], f"{where} 'center_lps'", path),
                                  _whole(label, f"{where} 'label'", path) if label is not None else None,
                                  _point(seed, f"{where} 'seed_lps'", path) if seed is not None else None))
        pg = entry.get("patient_ggg")
        cases.append(GroundTruthCase(cid, lesions, _ggg(pg, f"case {cid!r} 'patient_ggg'", path) if pg is not None else None,
                                     _relative(path, entry.get("lesion_mask"), f"case {cid!r} 'lesion_mask'")))
    return GroundTruthSet(cases)


# ---------------------------------------------------------------- writing

def _rel(path: Optional[Path], base: Path) -> Optional[str]:
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(base.parent.resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def detections_to_dict(dset: DetectionSet, json_path: Path) -> dict:
    out: dict[str, Any] = {"format": DETECTIONS_FORMAT}
    if dset.model:
        out["model"] = dset.model
    out["cases"] = []
    for c in dset.cases:
        entry: dict[str, Any] = {"case_id": c.case_id}
        if c.probability_map is not None:
            entry["probability_map"] = _rel(c.probability_map, json_path)
        entry["detections"] = []
        for d in c.detections:
            item: dict[str, Any] = {"id": d.id, "ggg": d.ggg, "score": round(float(d.score), 6),
                                    "center_lps": [round(float(v), 4) for v in d.center_lps]}
            if d.box_lps is not None:
                item["box_lps"] = [[round(float(v), 4) for v in corner] for corner in d.box_lps]
            if d.class_scores is not None:
                item["class_scores"] = {k: round(float(v), 6) for k, v in d.class_scores.items()}
            entry["detections"].append(item)
        out["cases"].append(entry)
    return out


def ground_truth_to_dict(gt: GroundTruthSet, json_path: Path) -> dict:
    out: dict[str, Any] = {"format": GROUND_TRUTH_FORMAT, "cases": []}
    for c in gt.cases:
        entry: dict[str, Any] = {"case_id": c.case_id}
        if c.patient_ggg is not None:
            entry["patient_ggg"] = c.patient_ggg
        if c.lesion_mask is not None:
            entry["lesion_mask"] = _rel(c.lesion_mask, json_path)
        entry["lesions"] = []
        for l in c.lesions:
            item: dict[str, Any] = {"id": l.id, "ggg": l.ggg, "center_lps": [round(float(v), 4) for v in l.center_lps]}
            if l.label is not None:
                item["label"] = l.label
            if l.seed_lps is not None:
                item["seed_lps"] = [round(float(v), 4) for v in l.seed_lps]
            entry["lesions"].append(item)
        out["cases"].append(entry)
    return out


def write_detections(dset: DetectionSet, path: str | Path) -> None:
    path = Path(path)
    with atomic_file(path) as handle:
        json.dump(detections_to_dict(dset, path), handle, indent=1)


def write_ground_truth(gt: GroundTruthSet, path: str | Path) -> None:
    path = Path(path)
    with atomic_file(path) as handle:
        json.dump(ground_truth_to_dict(gt, path), handle, indent=1)
