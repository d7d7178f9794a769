"""Image files: the one reader and writer every stage uses, and the grid comparison.

Images are read with SimpleITK, so every array is in LPS physical space whatever the
file's own convention. Errors name the file and what it was meant to be.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from .errors import CaseError

IMAGE_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
# what --format may choose for the images a command writes -> file suffix
OUTPUT_FORMATS = {"nrrd": ".nrrd", "nii.gz": ".nii.gz", "mha": ".mha"}
GEOMETRY_TOL = 1e-3  # mm / direction cosine
# Largest grid a stage may resample an image onto (a network's working grid, a registration
# region): 2^24 voxels is 64 MB as float32, tens of times a prostate study's, and keeps the
# networks' stacked inputs within a few hundred MB.
MAX_WORK_VOXELS = 2 ** 24


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(IMAGE_SUFFIXES)


def read_image_file(path: str | os.PathLike, what: str, label: bool = False, dims: int = 3,
                    max_label: int = 255) -> sitk.Image:
    """Read a 3D image file as float32 (UInt8 for label maps; 4D as stored); CaseError when unusable.

    `what` names the image in the error sentence, e.g. "ADC image" or "lesion mask of case 'A'".
    A label map must hold whole numbers 0..`max_label` (2 for zones: 1 = CG, 2 = PZ), checked
    before the cast, so that e.g. 300 is refused rather than stored as 44.
    """
    path = Path(path)
    if not path.is_file():
        raise CaseError(f"{path}: {what} file not found.")
    if not is_image_file(path):
        raise CaseError(f"{path}: {what} must be a NRRD, NIfTI or MHA file.")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise CaseError(f"{path}: {what} cannot be read ({str(exc).strip().splitlines()[-1][:120]}).") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"{path}: {what} must be a scalar image, not {image.GetNumberOfComponentsPerPixel()} components per voxel.")
    if image.GetDimension() != dims:
        raise CaseError(f"{path}: {what} must be a {dims}D image, not {image.GetDimension()}D.")
    if dims != 3:  # SimpleITK cannot cast 4D images; callers extract 3D frames first
        return image
    if label:
        check_labels(image, path, what, max_label)
    return sitk.Cast(image, sitk.sitkUInt8 if label else sitk.sitkFloat32)


def check_grid_size(size, spacing, what: str) -> None:
    """CaseError before allocating a grid of `size` voxels (spacing in mm) larger than MAX_WORK_VOXELS."""
    voxels = int(np.prod(np.asarray(size, dtype=float)))
    if voxels > MAX_WORK_VOXELS:
        extent = "x".join(f"{n * s:.0f}" for n, s in zip(size, spacing))
        raise CaseError(f"The {what} would need {'x'.join(str(int(n)) for n in size)} voxels ({extent} mm), more "
                        f"than the {MAX_WORK_VOXELS} allowed; the T2's size or voxel spacing is implausible.")


def check_labels(image: sitk.Image, path: str | os.PathLike, what: str, max_label: int = 255) -> None:
    """CaseError unless every voxel is a whole number 0..max_label (a label map, not an intensity image)."""
    values = np.unique(sitk.GetArrayViewFromImage(image))
    wrong = values[~np.isfinite(values) | (values < 0) | (values > max_label) | (values != np.round(values))] \
        if values.dtype.kind == "f" else values[(values < 0) | (values > max_label)]
    if wrong.size:
        shown = ", ".join(f"{v:g}" for v in wrong[:5].astype(float)) + (" ..." if wrong.size > 5 else "")
        raise CaseError(f"{path}: the {what} must hold whole-number labels 0..{max_label}, "
                        f"but has {wrong.size} other value{'s' if wrong.size > 1 else ''} ({shown}).")


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = GEOMETRY_TOL,
              direction_tol: Optional[float] = None) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * 10)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol if direction_tol is None else direction_tol))


def _storage_type(image: sitk.Image) -> int:
    """int16/uint16 when every voxel is an integer in range (DICOM-origin data), else float32."""
    if image.GetPixelID() == sitk.sitkUInt8:
        return sitk.sitkUInt8
    array = sitk.GetArrayViewFromImage(image)
    if array.size and np.all(np.isfinite(array)) and np.array_equal(array, np.round(array)):
        lo, hi = float(array.min()), float(array.max())
        if lo >= -32768 and hi <= 32767:
            return sitk.sitkInt16
        if lo >= 0 and hi <= 65535:
            return sitk.sitkUInt16
    return sitk.sitkFloat32


def with_format(name: str, image_format: str = "nrrd") -> str:
    """An image file name with the suffix of `image_format` (a key of OUTPUT_FORMATS) in place of
    its own, e.g. ("lesion-probability.nrrd", "mha") -> "lesion-probability.mha"."""
    from .errors import ParameterError

    if image_format not in OUTPUT_FORMATS:
        raise ParameterError(f"Image format {image_format!r} is not one of {', '.join(OUTPUT_FORMATS)}.")
    lower = name.lower()
    suffix = max((s for s in IMAGE_SUFFIXES if lower.endswith(s)), key=len, default="")
    return name[:len(name) - len(suffix)] + OUTPUT_FORMATS[image_format]


def write_image_file(image: sitk.Image, path: str | os.PathLike, pixel_type: Optional[int] = None) -> None:
    """Compressed NRRD, NIfTI or MHA as the suffix says, in the smallest lossless pixel type
    (or `pixel_type`, e.g. sitk.sitkFloat32 for a probability map that must stay float)."""
    if not is_image_file(path):
        raise CaseError(f"{path}: an image file must end in {', '.join(OUTPUT_FORMATS.values())}.")
    stored = _storage_type(image) if pixel_type is None else pixel_type
    sitk.WriteImage(sitk.Cast(image, stored), str(path), useCompression=True)
