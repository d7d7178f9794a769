"""What every study must satisfy before any stage uses it: `check_case(case, source)`.

`load_case` calls it once for every case, so load, preprocess, register, zones, grow,
detect and export all see the same checks; `check_image` serves a lone T2 file
(`prostate-cad zones t2.nrrd`). Each refusal is one sentence naming the file (or the DICOM
series) and what is wrong:

- every image: a plausible grid (spacing `SPACING_MM`, at most `MAX_EXTENT_MM` across, at
  least 2 voxels along each axis, at most `MAX_VOXELS` voxels) and only finite values. A
  NaN or infinite voxel is refused, never replaced: any replacement value would be a guess
  that changes the percentile normalisation, the registration metric and the detections;
- T2, ADC and DWI: not constant (an all-zero map carries no information and would blank
  its channel);
- every sequence but the T2: it overlaps the T2 physically, covering at least
  `MIN_OVERLAP` of the middle of the T2 volume, where the prostate lies (an ADC from
  another study, 500 mm away, or a sagittal slab beside the gland is refused).
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..errors import CaseError
from .case import Case

SPACING_MM = (0.1, 20.0)  # plausible voxel spacing of an MR image, every axis
MAX_EXTENT_MM = 600.0  # a whole-body field of view; larger is a broken header
MAX_VOXELS = 2 ** 27  # 512 MB as float32
MIN_OVERLAP = 0.05  # a thin slab through the gland passes; a sequence beside it does not
NOT_CONSTANT = ("T2", "ADC", "DWI", "DWI_COMPUTED")


def check_case(case: Case, source: str | os.PathLike) -> None:
    """Refuse (CaseError) a case whose images cannot give a meaningful result; see the module text."""
    check_image(case.t2, "T2", _where(case, "T2", source))
    for role, key, image in _sequences(case):
        where = _where(case, key, source)
        check_image(image, role, where)
        _check_overlap(image, case.t2, role, where)


def check_image(image: sitk.Image, role: str, where: str | os.PathLike) -> None:
    """Grid, size and values of one image of `role` ("T2", "ADC", "DWI", ...) read from `where`."""
    what = _what(role)
    if image.GetDimension() != 3:
        raise CaseError(f"{where}: the {what} must be a 3D image, not {image.GetDimension()}D.")
    size = np.array(image.GetSize())
    spacing = np.array(image.GetSpacing())
    lo, hi = SPACING_MM
    if not (np.all(np.isfinite(spacing)) and np.all(spacing >= lo) and np.all(spacing <= hi)):
        raise CaseError(f"{where}: the {what} has a voxel spacing of {_mm(spacing)} mm; "
                        f"an MR image has {lo:g} to {hi:g} mm along every axis.")
    if np.any(size < 2):
        raise CaseError(f"{where}: the {what} has {'x'.join(str(v) for v in size)} voxels; "
                        "it needs at least 2 along every axis.")
    extent = size * spacing
    if np.any(extent > MAX_EXTENT_MM) or int(np.prod(size)) > MAX_VOXELS:
        raise CaseError(f"{where}: the {what} spans {_mm(extent)} mm in {'x'.join(str(v) for v in size)} voxels; "
                        f"at most {MAX_EXTENT_MM:g} mm and {MAX_VOXELS} voxels are accepted.")
    array = sitk.GetArrayViewFromImage(image)
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise CaseError(f"{where}: the {what} has {bad} voxel{'s' if bad > 1 else ''} that "
                        f"{'are' if bad > 1 else 'is'} not a finite number (NaN or infinity); "
                        "such images are refused rather than repaired by guessing.")
    if role in NOT_CONSTANT and float(array.max()) == float(array.min()):
        raise CaseError(f"{where}: the {what} is empty or constant (every voxel equals {float(array.min()):g}), "
                        "so it carries no image.")


def _what(role: str) -> str:
    return {"DWI_COMPUTED": "computed DWI", "KTRANS": "Ktrans map", "DCE": "DCE time point"}.get(role, role) + \
        ("" if role == "KTRANS" else " image")


def _mm(values: np.ndarray) -> str:
    return "x".join(f"{v:.4g}" for v in values)


def _sequences(case: Case):
    """(role, key of case.used/case.files, image) of every image but the T2."""
    from .dicom_roles import format_b

    if case.adc is not None:
        yield "ADC", "ADC", case.adc
    for b, image in sorted(case.dwi.items()):
        yield "DWI", f"DWI:{format_b(b)}", image
    for b, image in sorted(case.dwi_computed.items()):
        yield "DWI_COMPUTED", f"DWI_COMPUTED:{format_b(b)}", image
    if case.ktrans is not None:
        yield "KTRANS", "KTRANS", case.ktrans
    for image in case.dce:
        yield "DCE", "DCE", image


def _where(case: Case, key: str, source: str | os.PathLike) -> str:
    """The file a role was read from, else the DICOM series within the study `source`."""
    if key in case.files:
        return case.files[key]
    info = next((u for u in case.used if u.role == key), None)
    if info is None:
        return f"{source} ({key})"
    if info.reason == "file":
        return info.source
    number = f"series {info.series_number} " if info.series_number is not None else "series "
    return f"{source} ({key}: {number}'{info.description}')"


def _index_to_physical(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, origin): physical = matrix @ index + origin."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return direction @ np.diag(image.GetSpacing()), np.array(image.GetOrigin())


def covered_fraction(image: sitk.Image, t2: sitk.Image, samples: int = 9) -> float:
    """Share of points spread over the middle half (along each axis) of the T2 that lie in `image`."""
    size = np.array(t2.GetSize(), float)
    axes = [np.linspace(0.25 * (n - 1), 0.75 * (n - 1), samples) for n in size]
    index = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    m_t2, o_t2 = _index_to_physical(t2)
    points = index @ m_t2.T + o_t2
    m, o = _index_to_physical(image)
    inside = np.linalg.solve(m, (points - o).T).T
    limit = np.array(image.GetSize(), float) - 0.5
    return float(np.mean(np.all((inside >= -0.5) & (inside <= limit), axis=1)))


def _check_overlap(image: sitk.Image, t2: sitk.Image, role: str, where: str) -> None:
    fraction = covered_fraction(image, t2)
    if fraction < MIN_OVERLAP:
        raise CaseError(f"{where}: the {_what(role)} covers {fraction:.0%} of the middle of the T2 volume "
                        f"(at least {MIN_OVERLAP:.0%} is needed), so it does not show the same region as the T2.")


def check_point_inside(point: Optional[tuple[float, float, float]], image: sitk.Image, what: str,
                       where: str) -> None:
    """Refuse an LPS point (e.g. a crop centre) that lies outside `image`."""
    if point is None:
        return
    m, o = _index_to_physical(image)
    index = np.linalg.solve(m, np.asarray(point, float) - o)
    if np.any(index < -0.5) or np.any(index > np.array(image.GetSize(), float) - 0.5):
        raise CaseError(f"{what} ({', '.join(f'{v:g}' for v in point)} mm LPS) lies outside the T2 image of {where}.")
