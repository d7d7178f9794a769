"""Bootstrap confidence intervals over patients (seeded, percentile method).

The resampling unit is the patient: a resample draws patients with replacement and takes
all samples of each drawn patient (its lesions at lesion level, itself at patient level),
so lesions of one patient stay together. A resample is represented by how many times each
patient was drawn; sample weights follow from it, which lets every statistic be computed
for all resamples at once with matrix products. One plan is shared by every criterion and
level of an evaluation, so their intervals are coherent, and a seed reproduces it exactly.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

CI_LEVEL = 0.95


def resample_counts(n_patients: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_patients): how often each patient is drawn in each resample."""
    if n_patients == 0 or n_resamples <= 0:
        return np.zeros((0, n_patients))
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_patients, size=(n_resamples, n_patients))
    counts = np.zeros((n_resamples, n_patients))
    np.add.at(counts, (np.arange(n_resamples)[:, None], drawn), 1.0)
    return counts


def sample_weights(counts: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """(n_resamples, n_samples) weights: the draw count of each sample's patient."""
    return counts[:, np.asarray(owners, dtype=np.int64)]


def _per_level(weights: np.ndarray, level_of: np.ndarray, select: np.ndarray, n_levels: int) -> np.ndarray:
    """(R, n_levels): summed weights of the selected samples at each score level."""
    out = np.zeros((weights.shape[0], n_levels))
    idx = np.flatnonzero(select)
    if idx.size == 0:
        return out
    idx = idx[np.argsort(level_of[idx], kind="stable")]
    lv = level_of[idx]
    starts = np.flatnonzero(np.r_[True, lv[1:] != lv[:-1]])
    out[:, lv[starts]] = np.add.reduceat(weights[:, idx], starts, axis=1)
    return out


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC (ties count half) of every resample; NaN where a resample lacks a class."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=bool)
    levels, level_of = np.unique(scores, return_inverse=True)
    pos = _per_level(weights, level_of, labels, levels.size)  # (R, L) weight of positives per score level
    neg = _per_level(weights, level_of, ~labels, levels.size)
    below = np.cumsum(neg, axis=1) - neg
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    wins = np.sum(pos * (below + 0.5 * neg), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1.0), np.nan)


def weighted_rate(hits: np.ndarray, among: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Fraction of `among` samples that are `hits`, per resample; NaN when none are among."""
    den = weights @ np.asarray(among, dtype=float)
    num = weights @ (np.asarray(hits, dtype=bool) & np.asarray(among, dtype=bool)).astype(float)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def percentile_ci(values: np.ndarray, seed: int, level: float = CI_LEVEL) -> Optional[dict[str, Any]]:
    """Percentile interval of the defined (non-NaN) resample values; None when there are none.

    n_resamples is the number drawn, n_valid how many had the statistic defined (e.g. a
    resample without positives has no AUC and is left out).
    """
    values = np.asarray(values, dtype=float)
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        return None
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(valid, [alpha, 1.0 - alpha])
    return {"low": float(low), "high": float(high), "level": level, "method": "percentile",
            "n_resamples": int(values.size), "n_valid": int(valid.size), "seed": int(seed)}
