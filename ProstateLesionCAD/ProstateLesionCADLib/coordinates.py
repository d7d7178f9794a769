"""LPS <-> RAS: the one place where world coordinates change convention.

Files, ITK and SimpleITK use LPS millimetres (DICOM patient coordinates); 3D Slicer's
MRML scene uses RAS. The two differ by the sign of the first two axes, so the same
4x4 flip converts points both ways and turns an ITK voxel-to-LPS matrix into Slicer's
IJK-to-RAS matrix. Every conversion in the project goes through this module, and so does the
one place a lesion's centre is taken from its mask (`mask_box_centres`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# diag(-1, -1, 1, 1): its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(point: Sequence[float]) -> tuple[float, float, float]:
    """Convert one point from LPS mm (files) to RAS mm (MRML)."""
    x, y, z = (float(v) for v in point)
    return (-x, -y, z)


def ras_to_lps(point: Sequence[float]) -> tuple[float, float, float]:
    """Convert one point from RAS mm (MRML) to LPS mm (files)."""
    return lps_to_ras(point)  # the flip is an involution


def ijk_to_lps_matrix(origin: Sequence[float], spacing: Sequence[float], direction: Sequence[float]) -> np.ndarray:
    """4x4 voxel-index -> LPS matrix from ITK geometry (direction as 9 row-major numbers)."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) @ np.diag(np.asarray(spacing, dtype=float))
    m[:3, 3] = np.asarray(origin, dtype=float)
    return m


def ijk_to_ras_matrix(origin: Sequence[float], spacing: Sequence[float], direction: Sequence[float]) -> np.ndarray:
    """4x4 voxel-index -> RAS matrix (Slicer's IJKToRAS) from ITK (LPS) geometry."""
    return LPS_TO_RAS @ ijk_to_lps_matrix(origin, spacing, direction)


def itk_geometry_from_ijk_to_ras(matrix: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """Inverse of `ijk_to_ras_matrix`: (origin, spacing, direction) in ITK's LPS terms."""
    lps = LPS_TO_RAS @ np.asarray(matrix, dtype=float)
    axes = lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    direction = axes / spacing
    return tuple(lps[:3, 3]), tuple(spacing), tuple(direction.ravel())


def image_ijk_to_ras_matrix(image) -> np.ndarray:
    """Slicer's IJKToRAS matrix of a SimpleITK image."""
    return ijk_to_ras_matrix(image.GetOrigin(), image.GetSpacing(), image.GetDirection())


def lps_box_to_ras_center_size(box_lps) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Centre (RAS) and edge lengths (mm) of an axis-aligned LPS box [[min...], [max...]]."""
    lo = np.asarray(box_lps[0], dtype=float)
    hi = np.asarray(box_lps[1], dtype=float)
    center = lps_to_ras((lo + hi) / 2.0)
    size = tuple(float(v) for v in np.abs(hi - lo))
    return center, size  # type: ignore[return-value]


def mask_box_centres(labels) -> dict[int, tuple[float, float, float]]:
    """LPS centre of each label's voxel bounding box (the middle of its first and last voxel
    along each image axis), as the released evaluation takes a ground-truth lesion's centre.
    A label without voxels (a lesion hidden under a lower-numbered overlapping one) has none:
    its seed stays its centre."""
    import SimpleITK as sitk

    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(labels, sitk.sitkUInt16))
    centres = {}
    for label in stats.GetLabels():
        box = stats.GetBoundingBox(label)  # start index (x, y, z), then size
        middle = [box[d] + (box[d + 3] - 1) / 2.0 for d in range(3)]
        centres[int(label)] = tuple(float(v) for v in labels.TransformContinuousIndexToPhysicalPoint(middle))
    return centres
