"""One voxel order for every network: images are reoriented to the canonical orientation
before they reach a network or the detector's crop, and results go back onto the caller's
grid afterwards, so a study gives the same answer whatever voxel order its files use.

The same physical image can be stored with its axes in any order and direction (DICOM
series sorted head-first or feet-first, NIfTI converters writing RAS, sagittal
acquisitions resliced, ...). Networks see arrays, not physical space, so they must be fed
one fixed layout. Canonical here is the layout whose direction cosines are closest to
the identity: columns run towards patient left, rows towards posterior, slices towards
superior (LPS) — the layout an axial DICOM series read by ITK already has. That is the
"T2 voxel frame" the published Retina U-Net works in and the layout of the sample study
and the phantoms the demo models were trained on, so those inputs pass through unchanged
(the same image object, bit for bit).

`to_canonical` is `sitk.DICOMOrient`: a permutation and flip of the voxel array with the
geometry adjusted, no interpolation; an oblique image keeps its obliquity (the axes are
matched to their nearest patient axes). `onto_grid` undoes it exactly for a result
computed on the canonical grid.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, TypeVar

import numpy as np
import SimpleITK as sitk

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# Asked of SimpleITK rather than spelled out: ITK has used both conventions for these codes.
CANONICAL = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(_IDENTITY)

T = TypeVar("T")


def orientation_code(image: sitk.Image) -> str:
    """The three-letter code of the patient axes nearest to the image's axes."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def is_canonical(image: sitk.Image) -> bool:
    return image.GetDimension() == 3 and orientation_code(image) == CANONICAL


def to_canonical(image: Optional[sitk.Image]) -> Optional[sitk.Image]:
    """The image in the canonical voxel order (the image itself when it already is; None stays None)."""
    if image is None or image.GetDimension() != 3 or is_canonical(image):
        return image
    return sitk.DICOMOrient(image, CANONICAL)


def onto_grid(result: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """A result on the canonical grid of `reference` put back onto `reference`'s own grid:
    the inverse permutation and flip, then `reference`'s exact geometry."""
    if reference.GetDimension() != 3 or is_canonical(reference):
        return result
    back = sitk.DICOMOrient(result, orientation_code(reference))
    if back.GetSize() != reference.GetSize():
        raise ValueError(f"result of size {result.GetSize()} is not on the canonical grid of an image "
                         f"of size {reference.GetSize()}")
    back.CopyInformation(reference)
    return back


def array_onto_grid(array_zyx: np.ndarray, canonical: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """`onto_grid` for a (z, y, x) array on the canonical grid `canonical`; returns the
    (z, y, x) array on `reference`'s grid (same dtype)."""
    if canonical is reference:
        return array_zyx
    dtype = array_zyx.dtype
    img = sitk.GetImageFromArray(array_zyx.astype(np.uint8) if dtype == bool else array_zyx)
    img.CopyInformation(canonical)
    return sitk.GetArrayFromImage(onto_grid(img, reference)).astype(dtype, copy=False)


def _canonical_value(value: Any) -> Any:
    """Images (alone, in a dict, list or tuple) in the canonical order; `value` itself when none changes."""
    if isinstance(value, sitk.Image):
        return to_canonical(value)
    if isinstance(value, dict):
        new = {k: _canonical_value(v) for k, v in value.items()}
        return value if all(new[k] is value[k] for k in value) else new
    if isinstance(value, (list, tuple)):
        items = [_canonical_value(v) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else type(value)(items)
    return value


def canonical_case(case: T) -> T:
    """A copy of a case (any dataclass holding images, alone or in dicts and lists) with
    every image in the canonical voxel order; the case itself when nothing changes."""
    changes = {}
    for f in dataclasses.fields(case):
        value = getattr(case, f.name)
        new = _canonical_value(value)
        if new is not value:
            changes[f.name] = new
    return dataclasses.replace(case, **changes) if changes else case
