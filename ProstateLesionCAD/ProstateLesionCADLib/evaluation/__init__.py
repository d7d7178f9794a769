"""Evaluation of lesion detectors as in Pellicer-Valero et al. 2022 (and FocalNet's FROC).

Library entry points (no files needed):
- `evaluate(detections_set, ground_truth_set, ...) -> dict` — everything metrics.json holds;
- `thresholds_block(result)` — working points as a model.json `thresholds` block;
- `working_points(scores, labels)`, `roc_auc(scores, labels)`, `metrics_at(scores, labels, t)`;
- `lesion_scores(...)`, `patient_score(...)`, `match_lesion(...)` — the matching rules;
- `froc(...)`, `case_dice(...)`; `write_report(result, out_dir)` for the files.
"""

from .evaluate import METRICS_FORMAT, evaluate, pair_cases, thresholds_block
from .froc import HitRule, froc
from .lesion_matching import LesionScore, PatientScore, lesion_scores, match_lesion, patient_score
from .roc import metrics_at, roc_auc, roc_curve, working_points
from .thresholds import load_given_thresholds, read_thresholds_file

__all__ = ["METRICS_FORMAT", "evaluate", "pair_cases", "thresholds_block", "HitRule", "froc", "LesionScore", "PatientScore",
           "lesion_scores", "match_lesion", "patient_score", "metrics_at", "roc_auc", "roc_curve",
           "working_points", "load_given_thresholds", "read_thresholds_file"]
