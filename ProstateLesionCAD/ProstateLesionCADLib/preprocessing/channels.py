"""The detector's input channels and how each is chosen from a case (Pellicer-Valero 2022,
Methods, "Pre-processing", and Fig. 3).

Channel order (ARCHITECTURE.md, paper Fig. 3):
    T2, DWI_LOW, DWI_HIGH, ADC, KTRANS, DCE_T10, DCE_T20, DCE_T30, PROSTATE, CG, PZ

Rules decided here (the paper gives the examples, we state the general rule):

* DWI_LOW ("b400/b500"): a b-value in [300, 600] s/mm²; when several, the one nearest
  450 (the middle of b400 and b500); a tie goes to the lower b-value (b400 is what most
  ProstateX training scans provide).
* DWI_HIGH ("b800/b1000/b1400"): a b-value >= 700 s/mm²; when several, the one nearest
  800 (the channel of the published ProstateX model); a tie goes to the lower b-value.
* For both, a measured DWI image is preferred; a scanner-computed (extrapolated) image
  is used only when no measured image falls in the range.
* DCE: the paper samples a 30-point series "at times 10, 20, and 30". Time 30 only
  exists in a 30-point series if the times are counted from 1, so these are 1-based
  positions, i.e. 0-based indices 9, 19, 29. A series of N points is sampled at the same
  relative positions k/3 of the series: 1-based round(N·k/3) (halves round up), k = 1, 2, 3
  — e.g. N = 70 gives 0-based 22, 46, 69. Positions count acquisitions, not seconds:
  the paper's "times" index the time series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import SimpleITK as sitk

CHANNELS: tuple[str, ...] = (
    "T2", "DWI_LOW", "DWI_HIGH", "ADC", "KTRANS",
    "DCE_T10", "DCE_T20", "DCE_T30",
    "PROSTATE", "CG", "PZ",
)
IMAGE_CHANNELS: tuple[str, ...] = CHANNELS[:8]
MASK_CHANNELS: tuple[str, ...] = CHANNELS[8:]

DWI_LOW_RANGE = (300.0, 600.0)
DWI_LOW_TARGET = 450.0
DWI_HIGH_MIN = 700.0
DWI_HIGH_TARGET = 800.0

# The paper's reference series length and sampled 1-based positions.
DCE_REFERENCE_LENGTH = 30
DCE_REFERENCE_POSITIONS = (10, 20, 30)


@dataclass(frozen=True)
class DwiChoice:
    """Which DWI image fills a channel, and whether it is measured or scanner-computed."""

    b_value: float
    computed: bool

    def describe(self) -> str:
        return f"b{self.b_value:g} ({'computed' if self.computed else 'measured'})"


def _nearest(b_values: list[float], target: float) -> Optional[float]:
    if not b_values:
        return None
    return min(b_values, key=lambda b: (abs(b - target), b))


def choose_dwi(measured: dict[float, sitk.Image], computed: dict[float, sitk.Image],
               low: float, high: float, target: float) -> Optional[DwiChoice]:
    """Pick the b-value in [low, high] nearest `target`, measured before computed."""
    for pool, is_computed in ((measured, False), (computed, True)):
        b = _nearest([b for b in pool if low <= b <= high], target)
        if b is not None:
            return DwiChoice(float(b), is_computed)
    return None


def choose_dwi_low(measured: dict[float, sitk.Image], computed: dict[float, sitk.Image]) -> Optional[DwiChoice]:
    """DWI_LOW channel: b400/b500 (see module docstring for the rule)."""
    return choose_dwi(measured, computed, DWI_LOW_RANGE[0], DWI_LOW_RANGE[1], DWI_LOW_TARGET)


def choose_dwi_high(measured: dict[float, sitk.Image], computed: dict[float, sitk.Image]) -> Optional[DwiChoice]:
    """DWI_HIGH channel: b800/b1000/b1400 (see module docstring for the rule)."""
    return choose_dwi(measured, computed, DWI_HIGH_MIN, float("inf"), DWI_HIGH_TARGET)


def dce_indices(n_points: int) -> tuple[int, int, int]:
    """0-based indices of DCE_T10, DCE_T20, DCE_T30 in a series of `n_points` images.

    30 points -> (9, 19, 29) exactly as in the paper; other lengths keep the relative
    positions 1/3, 2/3, 1 of the series (1-based round-half-up, then minus one).
    """
    if n_points < 1:
        raise ValueError("a DCE series needs at least one time point")
    out = []
    for position in DCE_REFERENCE_POSITIONS:
        # Integer arithmetic: floor(N·p/30 + 1/2) without float rounding surprises.
        one_based = (2 * n_points * position + DCE_REFERENCE_LENGTH) // (2 * DCE_REFERENCE_LENGTH)
        out.append(min(max(one_based, 1), n_points) - 1)
    return tuple(out)  # type: ignore[return-value]
