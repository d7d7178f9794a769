"""Ordinal encoding of the six FocalNet labels (Cao et al. 2019, Sec. II-C1, Table I).

Classes: 0 non-lesion, 1 GS 3+3, 2 GS 3+4, 3 GS 4+3, 4 GS = 8, 5 GS >= 9. Class k is the
5-bit vector whose first k bits are 1 ("bit i: the label is a class >= i"). The predicted
class of a bit vector is the highest k with all of the first k bits on (0 when bit 1 is off).

Mapping to the project's GGG classes (ARCHITECTURE.md: 0 benign, 1, 2, 3 = GGG3 or higher):
GS 3+3 -> GGG1, GS 3+4 -> GGG2, GS 4+3, 8 and >= 9 -> GGG3. For training on our ground
truth the reverse mapping is GGG1 -> class 1, GGG2 -> class 2, GGG3+ -> class 3 (our labels
do not separate GS 4+3 / 8 / >= 9, so bits 4 and 5 stay 0 and the network learns them as
"never"). GGG0 (benign) lesions are *non-lesion*, class 0: the paper annotates PCa only, and
benign findings that look like PCa are exactly what the detector must not report.
"""

from __future__ import annotations

import numpy as np

N_BITS = 5
CLASS_NAMES = ("non-lesion", "GS 3+3", "GS 3+4", "GS 4+3", "GS 8", "GS >= 9")
CLASS_TO_GGG = (0, 1, 2, 3, 3, 3)
GGG_TO_CLASS = {0: 0, 1: 1, 2: 2, 3: 3}


def encode(labels: np.ndarray) -> np.ndarray:
    """Class map (any shape, values 0..5) -> bits with a new leading axis of 5: out[i] = labels > i."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > N_BITS):
        raise ValueError(f"ordinal classes must be 0..{N_BITS}, got {labels.min()}..{labels.max()}")
    thresholds = np.arange(N_BITS).reshape((N_BITS,) + (1,) * labels.ndim)
    return (labels[None] > thresholds).astype(np.uint8)


def decode(bits: np.ndarray) -> np.ndarray:
    """Bits (leading axis 5, 0/1 or booleans) -> class map: the highest k with bits 1..k all on."""
    on = np.asarray(bits).astype(bool)
    return np.cumprod(on, axis=0).sum(axis=0).astype(np.int64)


def decode_probabilities(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Per-pixel class from the 5 sigmoid outputs (leading axis 5), each bit on when > threshold."""
    return decode(np.asarray(prob) > threshold)


def class_to_ggg(classes: np.ndarray | int) -> np.ndarray | int:
    """FocalNet class(es) -> GGG class(es) 0..3 (see the module docstring)."""
    table = np.asarray(CLASS_TO_GGG)
    out = table[np.asarray(classes)]
    return int(out) if np.ndim(out) == 0 else out


def ggg_to_class(ggg: int) -> int:
    """Our ground-truth GGG (0..3) -> the FocalNet class used as training target."""
    if int(ggg) not in GGG_TO_CLASS:
        raise ValueError(f"GGG must be 0..3, got {ggg}")
    return GGG_TO_CLASS[int(ggg)]


def ggg_class_scores(prob: np.ndarray) -> dict[str, float]:
    """Probabilities of GGG 0..3 at one pixel from its 5 cumulative bit probabilities.

    Bit k estimates P(class >= k), so P(GGG0) = 1 - p1, P(GGG1) = p1 - p2, P(GGG2) = p2 - p3,
    P(GGG3+) = p3; the bits are made monotone first (a running minimum) so no score is < 0.
    """
    p = np.minimum.accumulate(np.clip(np.asarray(prob, dtype=float), 0.0, 1.0))
    return {"0": float(1.0 - p[0]), "1": float(p[0] - p[1]), "2": float(p[1] - p[2]), "3": float(p[2])}
