"""Thresholds given to the evaluation (a-priori working points), from a file or a model package.

Thresholds file format (`prostate-cad-thresholds/1`, JSON)::

    {"format": "prostate-cad-thresholds/1",          # optional
     "computed_on": "training folds of run 3",       # optional, free text
     "GGG>=1": {"max_sensitivity": 0.027, "balanced": 0.105},
     "GGG>=2": {"max_sensitivity": 0.173, "balanced": 0.301},
     "GGG>=3": {"a_priori": 0.2}}

Each criterion maps working-point names to score thresholds (any names; non-numeric values
such as "computed_on" are ignored so a model.json "thresholds" block can be pasted as is).
Criteria may be left out. The same thresholds apply at lesion and patient level, as in the
paper's Supplementary Table 2 (a-priori thresholds computed on the training data).
A model package (folder, its model.json, or an installed model's name) supplies its
`thresholds` block instead.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from ..errors import FormatError, ModelError
from ..ggg_palette import criterion_name
from ..models.package import MODEL_FORMAT, find_model

THRESHOLDS_FORMAT = "prostate-cad-thresholds/1"
CRITERION_KEY = re.compile(r"^GGG>=([123])$")


def _numeric_entries(entry: Any, where: str) -> dict[str, float]:
    if not isinstance(entry, dict):
        raise FormatError(f"{where} must be an object of working-point names to thresholds.")
    out = {}
    for name, value in entry.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            raise FormatError(f"{where} {name!r} must be a finite number, got {value!r}.")
        out[str(name)] = float(value)
    return out


def parse_thresholds(data: Any, where: str) -> dict[str, dict[str, float]]:
    """{"GGG>=k": {name: threshold}} from a thresholds object (file content or model block)."""
    if not isinstance(data, dict):
        raise FormatError(f"{where}: expected a JSON object of criteria like 'GGG>=2'.")
    out = {}
    for key, entry in data.items():
        if CRITERION_KEY.match(str(key)):
            values = _numeric_entries(entry, f"{where}: {key}")
            if values:
                out[str(key)] = values
        elif str(key).upper().startswith("GGG"):
            raise FormatError(f"{where}: unknown criterion {key!r}; use 'GGG>=1', 'GGG>=2' or 'GGG>=3'.")
    if not out:
        raise FormatError(f"{where}: no thresholds found (expected e.g. {{\"GGG>=2\": {{\"balanced\": 0.1}}}}).")
    return out


def read_thresholds_file(path: str | Path) -> dict[str, dict[str, float]]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(f"{path}: file not found.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not valid JSON ({exc}).") from None
    if isinstance(data, dict) and data.get("format", THRESHOLDS_FORMAT) != THRESHOLDS_FORMAT:
        raise FormatError(f"{path}: unknown format {data.get('format')!r}; expected {THRESHOLDS_FORMAT!r}.")
    return parse_thresholds(data, str(path))


def load_given_thresholds(spec: str) -> tuple[dict[str, dict[str, float]], str]:
    """(thresholds per criterion, description of the source) from a file, a package or a model name."""
    path = Path(spec)
    is_model = path.is_dir() or path.name == "model.json"
    if path.is_file() and not is_model:
        try:
            is_model = json.loads(path.read_text(encoding="utf-8")).get("format") == MODEL_FORMAT
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            is_model = False
    if path.is_file() and not is_model:
        return read_thresholds_file(path), f"file {path}"
    package = find_model(spec, verify=False)
    block = {}
    for k in (1, 2, 3):
        entry = package.thresholds(criterion_name(k))
        if entry is not None:
            block[criterion_name(k)] = entry
    if not block:
        raise ModelError(f"Model '{package.name}' has no thresholds in its model.json.")
    computed_on = {str(v.get("computed_on")) for v in block.values() if v.get("computed_on")}
    source = f"model {package.name} {package.version}"
    if computed_on:
        source += f" (computed on {', '.join(sorted(computed_on))})"
    return parse_thresholds(block, f"model '{package.name}' thresholds"), source


def lesion_working_points(pairs, computed_on: str, criteria=(1, 2, 3)) -> tuple[dict, dict]:
    """A model.json `thresholds` block and its `validation` summary from held-out predictions.

    pairs: (GroundTruthCase, DetectionCase or None) of cases the model did not train on (the
    validation folds: each case predicted by the fold that left it out). Per criterion GGG>=k,
    the lesion-level `max_sensitivity` and `balanced` thresholds (Pellicer-Valero et al.'s
    a-priori working points, Supplementary Table 2), a criterion left out when either is
    undefined; validation: lesion AUC and counts. Every detector's training uses this.
    """
    from .lesion_matching import lesion_scores
    from .roc import roc_auc, working_points

    thresholds, validation = {}, {}
    for k in criteria:
        scores, labels = [], []
        for gt_case, dcase in pairs:
            for ls in lesion_scores(gt_case, dcase, k):
                scores.append(ls.score)
                labels.append(ls.positive)
        if not scores:
            continue
        wp = working_points(scores, labels)
        key = criterion_name(k)
        validation[key] = {"lesion_auc": roc_auc(scores, labels), "n_lesions": len(scores),
                           "n_positive": int(sum(labels))}
        if all(wp.get(n) for n in ("max_sensitivity", "balanced")):
            thresholds[key] = {"max_sensitivity": float(wp["max_sensitivity"]["threshold"]),
                               "balanced": float(wp["balanced"]["threshold"]), "computed_on": computed_on}
    return thresholds, validation
