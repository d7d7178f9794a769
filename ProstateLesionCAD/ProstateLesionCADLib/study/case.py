"""The in-memory study: images by role, as SimpleITK images in LPS world coordinates.

Roles (ARCHITECTURE.md): T2 (axial, required), ADC, DWI (one 3D image per b-value), computed
high-b DWI, KTRANS, DCE (time-ordered list). Every role but T2 may be absent. Loading
from DICOM lives in `dicom_roles.py`, from per-role image files in `case_files.py`;
`load_case(path)` picks the right one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import SimpleITK as sitk

ROLES = ("T2", "ADC", "DWI", "DWI_COMPUTED", "KTRANS", "DCE")


@dataclass
class SeriesInfo:
    """Where a role's image came from: a DICOM series or a file, and why it was (not) used."""

    role: str
    description: str
    source: str  # SeriesInstanceUID or file path
    reason: str = ""  # why it was chosen, or why it is unused
    series_number: Optional[int] = None
    acquisition_time: Optional[str] = None


@dataclass
class Case:
    """One patient study. Images are SimpleITK images (float32 unless noted), LPS mm."""

    case_id: str
    t2: sitk.Image
    adc: Optional[sitk.Image] = None
    dwi: dict[float, sitk.Image] = field(default_factory=dict)  # measured, b-value -> image
    dwi_computed: dict[float, sitk.Image] = field(default_factory=dict)  # scanner-computed high b
    ktrans: Optional[sitk.Image] = None
    dce: list[sitk.Image] = field(default_factory=list)  # ordered by acquisition/trigger time
    dce_times: list[float] = field(default_factory=list)  # seconds from the first time point
    used: list[SeriesInfo] = field(default_factory=list)
    unused: list[SeriesInfo] = field(default_factory=list)
    # What loading did to the images beyond reading them (ADC unit converted, diffusion
    # directions combined), one sentence each, for the user.
    notes: list[str] = field(default_factory=list)
    # The image file each role was read from ("T2", "ADC", "DWI:800", "KTRANS", "DCE"), when it
    # came from a file rather than a DICOM series, so that input errors can name the file.
    files: dict[str, str] = field(default_factory=dict)
    # Optional masks on the T2 grid (UInt8), when known (zonal segmentation, phantoms).
    prostate: Optional[sitk.Image] = None
    zones: Optional[sitk.Image] = None  # 1 = CG, 2 = PZ

    def roles_present(self) -> list[str]:
        present = ["T2"]
        if self.adc is not None:
            present.append("ADC")
        if self.dwi:
            present.append("DWI")
        if self.dwi_computed:
            present.append("DWI_COMPUTED")
        if self.ktrans is not None:
            present.append("KTRANS")
        if self.dce:
            present.append("DCE")
        return present

    def all_dwi(self) -> dict[float, sitk.Image]:
        """Measured and computed DWI by b-value; a measured image wins over a computed one."""
        merged = dict(self.dwi_computed)
        merged.update(self.dwi)
        return dict(sorted(merged.items()))
