"""The unit of a scanner-computed ADC map, found from its values, and the map in 10⁻⁶ mm²/s.

Scanners store ADC in different units: Siemens and GE in 10⁻⁶ mm²/s (prostate tissue about
600 to 2500, maps clipped near 4000), some Philips and PACS exports in 10⁻³ mm²/s (0.6 to
2.5, through a RescaleSlope) or in mm²/s. The detectors and their pre-processing expect
10⁻⁶ mm²/s (ProstateX). Human tissue ADC spans roughly 0.1 to 4 x 10⁻³ mm²/s (free water
at body temperature 3 x 10⁻³), so the 99th percentile of the map's positive values falls
in a range that names its unit, and the ranges of the three units lie three decades apart.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import SimpleITK as sitk

# unit name, factor to 10⁻⁶ mm²/s, range of the 99th percentile of positive values in that unit
UNITS = (
    ("10^-6 mm²/s", 1.0, (100.0, 20000.0)),
    ("10^-3 mm²/s", 1e3, (0.1, 20.0)),
    ("mm²/s", 1e6, (1e-4, 0.02)),
)


def adc_unit(values: np.ndarray) -> tuple[Optional[str], float, float]:
    """(unit name or None when the values fit no unit, factor to 10⁻⁶ mm²/s, 99th percentile)."""
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.size == 0:
        return None, 1.0, 0.0
    p99 = float(np.percentile(positive, 99))
    for name, factor, (low, high) in UNITS:
        if low <= p99 <= high:
            return name, factor, p99
    return None, 1.0, p99


def adc_to_micro(image: sitk.Image) -> tuple[sitk.Image, Optional[str]]:
    """The ADC map in 10⁻⁶ mm²/s and a note saying what was found when it was not stored so."""
    values = sitk.GetArrayViewFromImage(image)
    name, factor, p99 = adc_unit(values)
    if name is None:
        return image, (f"ADC values (99th percentile {p99:.4g}) fit no known unit; "
                       f"used as stored, as 10^-6 mm²/s")
    if factor == 1.0:
        return image, None
    scaled = sitk.GetImageFromArray((sitk.GetArrayFromImage(image) * np.float32(factor)).astype(np.float32))
    scaled.CopyInformation(image)
    return scaled, (f"ADC stored in {name} (99th percentile {p99:.4g}); "
                    f"multiplied by {factor:g} to 10^-6 mm²/s")
