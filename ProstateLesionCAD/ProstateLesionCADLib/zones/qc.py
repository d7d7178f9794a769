"""Sanity checks of a gland segmentation: flags a reviewer should see before trusting it.

An adult prostate is roughly 15–150 cm³ (small glands to large BPH); a gland that
touches the image border is probably cut off or a leak into other tissue. An empty
result is an error, not a flag: nothing downstream can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..errors import CaseError

MIN_VOLUME_CM3 = 15.0
MAX_VOLUME_CM3 = 150.0


@dataclass
class GlandQc:
    volume_cm3: float
    flags: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.flags


def voxel_volume_cm3(image: sitk.Image) -> float:
    return float(np.prod(image.GetSpacing())) / 1000.0


def check_gland(mask: sitk.Image, what: str = "prostate") -> GlandQc:
    """Volume and border checks of a binary mask on the T2 grid; raise CaseError when empty."""
    arr = sitk.GetArrayViewFromImage(mask) > 0
    if not arr.any():
        raise CaseError(f"The {what} segmentation is empty: no gland was found in the T2 image "
                        "(check that the series is an axial prostate T2 and that it is not blank).")
    volume = float(arr.sum()) * voxel_volume_cm3(mask)
    flags = []
    if not MIN_VOLUME_CM3 <= volume <= MAX_VOLUME_CM3:
        flags.append(f"{what} volume {volume:.1f} cm³ is outside the expected "
                     f"{MIN_VOLUME_CM3:.0f}–{MAX_VOLUME_CM3:.0f} cm³")
    faces = []
    names = ("first slice", "last slice", "top row", "bottom row", "left column", "right column")
    for axis in range(3):
        for end in (0, -1):
            faces.append(np.take(arr, end, axis=axis).any())
    touched = [n for n, t in zip(names, faces) if t]
    if touched:
        flags.append(f"{what} touches the image border ({', '.join(touched)}): it may be cut off")
    return GlandQc(volume_cm3=volume, flags=flags)
