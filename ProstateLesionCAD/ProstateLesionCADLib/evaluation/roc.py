"""ROC analysis: AUC, confusion metrics at a threshold, and the paper's two working points.

Pellicer-Valero et al. 2022, Results ("Quantitative results", Table 1): scores are
thresholded at two working points, *maximum sensitivity* and *balanced*. Definitions used
here:

- A case is called positive when  score > threshold - 1e-4  (POSITIVE_TOLERANCE), so a
  threshold equal to an observed score (as printed with 3-6 decimals) includes that score.
- AUC is the Mann-Whitney statistic: the probability that a positive outscores a negative,
  ties counting one half. Undefined (None) without positives or without negatives.
- `balanced`: the observed score that, used as threshold, maximises sensitivity x
  specificity; ties go to the smaller |sensitivity - specificity|, then to the higher
  threshold.
- `max_sensitivity`: the highest threshold reaching the best sensitivity attainable with a
  threshold *above the lowest observed score*, i.e. one that keeps the lowest-scored cases
  negative; lesions the model never detected (score 0) then do not make every case
  positive. When all cases share one score there is no such threshold and the lowest score
  itself is used (noted).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

POSITIVE_TOLERANCE = 1e-4
WORKING_POINTS = ("max_sensitivity", "balanced")


def _arrays(scores: Sequence[float], labels: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels.")
    return s, y


def predicted_positive(scores: Sequence[float], threshold: float) -> np.ndarray:
    """The decision rule of every working point: score > threshold - 1e-4."""
    return np.asarray(scores, dtype=float) > float(threshold) - POSITIVE_TOLERANCE


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> Optional[float]:
    """Area under the ROC curve with ties counting one half; None when a class is absent."""
    s, y = _arrays(scores, labels)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    # Mann-Whitney U by binary search: negatives below each positive count 1, equal ones 1/2
    neg = np.sort(s[~y])
    pos = s[y]
    below = np.searchsorted(neg, pos, side="left")
    equal = np.searchsorted(neg, pos, side="right") - below
    return float((below.sum() + 0.5 * equal.sum()) / (n_pos * n_neg))


def auc_note(n_positive: int, n_negative: int) -> Optional[str]:
    """Why the AUC is undefined, or None when it is defined."""
    if n_positive == 0 and n_negative == 0:
        return "AUC undefined: no cases."
    if n_positive == 0:
        return "AUC undefined: no positive cases for this criterion."
    if n_negative == 0:
        return "AUC undefined: no negative cases for this criterion."
    return None


def _ratio(num: int, den: int) -> Optional[float]:
    return float(num) / den if den else None


def metrics_at(scores: Sequence[float], labels: Sequence[bool], threshold: float) -> dict[str, Any]:
    """Sensitivity, specificity, PPV, NPV and counts at one threshold (None when undefined)."""
    s, y = _arrays(scores, labels)
    pred = predicted_positive(s, threshold)
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    tn = int(np.sum(~pred & ~y))
    fn = int(np.sum(~pred & y))
    return {"threshold": float(threshold), "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
            "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn), "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def _sens_spec(s: np.ndarray, y: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity at many thresholds at once (NaN for an absent class)."""
    cut = np.asarray(thresholds, dtype=float) - POSITIVE_TOLERANCE
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = (pos.size - np.searchsorted(pos, cut, side="right")) / pos.size  # called: score > t - tol
        spec = np.searchsorted(neg, cut, side="right") / neg.size
    return sens, spec


def max_sensitivity_threshold(scores: Sequence[float], labels: Sequence[bool]) -> tuple[Optional[float], Optional[str]]:
    """(threshold, note) of the max_sensitivity working point; (None, note) when undefined."""
    s, y = _arrays(scores, labels)
    if not y.any():
        return None, "undefined: no positive cases."
    lowest = float(s.min())
    # thresholds whose rule keeps the lowest-scored cases negative
    candidates = [float(t) for t in np.unique(s) if not lowest > float(t) - POSITIVE_TOLERANCE]
    if not candidates:
        return lowest, "all cases share one score; no threshold above it exists, so every case is called positive."
    sens = _sens_spec(s, y, np.array(candidates))[0]
    return float(np.max(np.array(candidates)[sens == sens.max()])), None


def balanced_threshold(scores: Sequence[float], labels: Sequence[bool]) -> tuple[Optional[float], Optional[str]]:
    """(threshold, note) of the balanced working point; (None, note) when a class is absent."""
    s, y = _arrays(scores, labels)
    if not y.any() or y.all():
        return None, "undefined: needs both positive and negative cases."
    thresholds = np.unique(s)
    sens, spec = _sens_spec(s, y, thresholds)
    # lexicographic: largest product, then smallest |sens - spec|, then highest threshold
    # (rounded so that products equal on paper, e.g. 0.75 x 0.4 and 0.5 x 0.6, tie)
    best = np.lexsort((thresholds, -np.round(np.abs(sens - spec), 12), np.round(sens * spec, 12)))[-1]
    return float(thresholds[best]), None


def working_points(scores: Sequence[float], labels: Sequence[bool]) -> dict[str, Optional[dict[str, Any]]]:
    """{"max_sensitivity": metrics_at(...), "balanced": ...}; None (with a note) when undefined.

    Each entry: threshold, sensitivity, specificity, ppv, npv, tp, fp, tn, fn (+ note).
    Both are undefined when the AUC is (no positives or no negatives), so that a
    criterion without positives never yields a misleading threshold.
    """
    s, y = _arrays(scores, labels)
    out: dict[str, Optional[dict[str, Any]]] = {}
    if not y.any() or y.all():
        return {name: None for name in WORKING_POINTS}
    for name, finder in (("max_sensitivity", max_sensitivity_threshold), ("balanced", balanced_threshold)):
        t, note = finder(s, y)
        entry = metrics_at(s, y, t)
        if note:
            entry["note"] = note
        out[name] = entry
    return out


def roc_curve(scores: Sequence[float], labels: Sequence[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, threshold) from all-negative to all-positive."""
    s, y = _arrays(scores, labels)
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    tpr, fpr = [], []
    for t in thresholds:
        pred = predicted_positive(s, t) if np.isfinite(t) else np.zeros_like(y)
        tpr.append(np.sum(pred & y) / n_pos)
        fpr.append(np.sum(pred & ~y) / n_neg)
    return np.array(fpr), np.array(tpr), thresholds
