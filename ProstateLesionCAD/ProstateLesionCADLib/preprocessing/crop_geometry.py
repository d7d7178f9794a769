"""The detector's crop grid and its mapping back to the T2 grid and to LPS world coordinates.

Pellicer-Valero 2022, Methods, "Pre-processing": every sequence is cropped to a region
of 160×160×24 voxels at spacing (0.5, 0.5, 3) mm around the prostate. The crop grid
here keeps the T2 direction (axes parallel to the T2 rows/columns/slices, as the
published code, which resamples in the T2 voxel frame; callers pass the T2 grid in the
canonical voxel order of `orientation.py`) and is placed so that:

* its centre — continuous index ((size - 1) / 2) = (79.5, 79.5, 11.5) — is the requested
  centre (the prostate centroid), then
* its origin is snapped to the nearest T2 voxel centre. When the T2 spacing already is
  (0.5, 0.5, 3) mm (the median ProstateX/IVO spacing) crop voxels then coincide with T2
  voxels and cropping T2 does not interpolate at all. The snap moves the centre by at most
  half a T2 voxel along each axis.

Index conventions: SimpleITK continuous indices (x = column, y = row, z = slice), voxel
centres at integers, so voxel i covers [i - 0.5, i + 0.5]. Arrays from
`sitk.GetArrayFromImage` are (z, y, x); the MDT Retina U-Net uses (y, x, z).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

CROP_SIZE: tuple[int, int, int] = (160, 160, 24)  # (x, y, z) voxels
CROP_SPACING: tuple[float, float, float] = (0.5, 0.5, 3.0)  # mm

_INTERPOLATORS = {
    "bspline": sitk.sitkBSpline,  # 3rd order
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "label": sitk.sitkLabelGaussian,
}


@dataclass(frozen=True)
class Grid:
    """An image grid: size (x, y, z), spacing mm, origin LPS mm, direction (row-major 3×3)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Grid":
        return cls(tuple(int(s) for s in image.GetSize()), tuple(float(s) for s in image.GetSpacing()),
                   tuple(float(o) for o in image.GetOrigin()), tuple(float(d) for d in image.GetDirection()))

    def matrix(self) -> np.ndarray:
        """index -> LPS linear part: direction @ diag(spacing)."""
        return np.asarray(self.direction, float).reshape(3, 3) @ np.diag(self.spacing)

    def index_to_lps(self, index: Sequence | np.ndarray) -> np.ndarray:
        """Continuous (x, y, z) indices, shape (3,) or (n, 3), to LPS millimetres."""
        idx = np.asarray(index, float)
        return idx @ self.matrix().T + np.asarray(self.origin)

    def lps_to_index(self, points: Sequence | np.ndarray) -> np.ndarray:
        """LPS millimetres, shape (3,) or (n, 3), to continuous (x, y, z) indices."""
        p = np.asarray(points, float) - np.asarray(self.origin)
        return p @ np.linalg.inv(self.matrix()).T

    def image(self, pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
        """An empty image on this grid (a resampling reference)."""
        img = sitk.Image([int(s) for s in self.size], pixel_type)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img

    def same_as(self, image: sitk.Image, tol: float = 1e-4) -> bool:
        other = Grid.of(image)
        return (other.size == self.size
                and np.allclose(other.spacing, self.spacing, atol=tol)
                and np.allclose(other.origin, self.origin, atol=tol)
                and np.allclose(other.direction, self.direction, atol=tol))

    def to_dict(self) -> dict:
        return {"size": list(self.size), "spacing": list(self.spacing),
                "origin": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        return cls(tuple(int(v) for v in d["size"]), tuple(float(v) for v in d["spacing"]),
                   tuple(float(v) for v in d["origin"]), tuple(float(v) for v in d["direction"]))


def _box_corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.array([[(lo, hi)[i][0], (lo, hi)[j][1], (lo, hi)[k][2]]
                     for i in (0, 1) for j in (0, 1) for k in (0, 1)], float)


def resample(image: sitk.Image, grid: Grid, interpolation: str = "bspline",
             transform: Optional[sitk.Transform] = None, default: float = 0.0) -> sitk.Image:
    """Resample `image` onto `grid`; `transform` maps grid points to `image` points
    (the ITK convention: fixed -> moving). Masks: interpolation="label" (Gaussian label
    interpolation, as the paper), images: "bspline" (3rd order)."""
    if interpolation not in _INTERPOLATORS:
        raise ValueError(f"unknown interpolation {interpolation!r}; use one of {sorted(_INTERPOLATORS)}")
    if interpolation in ("label", "nearest"):
        pixel = image.GetPixelID()
    else:  # intensities: interpolate in float so B-spline over/undershoot is kept, not clipped
        image = sitk.Cast(image, sitk.sitkFloat32)
        pixel = sitk.sitkFloat32
    return sitk.Resample(image, grid.image(pixel), transform or sitk.Transform(),
                         _INTERPOLATORS[interpolation], float(default), pixel)


@dataclass(frozen=True)
class CropGeometry:
    """The 160×160×24 crop grid, the T2 grid it came from, and the centre it was placed on."""

    crop: Grid
    t2: Grid
    center_lps: tuple[float, float, float]
    center_source: str  # "prostate mask", "zones mask", "field of view", "given point"

    # -- construction -------------------------------------------------------------------
    @classmethod
    def around(cls, t2: Grid, center_lps: Sequence[float], center_source: str,
               size: Sequence[int] = CROP_SIZE, spacing: Sequence[float] = CROP_SPACING) -> "CropGeometry":
        """Crop grid with T2 direction centred on `center_lps`, origin snapped to the T2 lattice."""
        size = tuple(int(s) for s in size)
        spacing = tuple(float(s) for s in spacing)
        direction = t2.direction
        probe = Grid(size, spacing, (0.0, 0.0, 0.0), direction)
        half = (np.asarray(size, float) - 1.0) / 2.0
        origin = np.asarray(center_lps, float) - probe.matrix() @ half
        snapped = t2.index_to_lps(np.round(t2.lps_to_index(origin)))
        crop = Grid(size, spacing, tuple(float(v) for v in snapped), direction)
        return cls(crop, t2, tuple(float(c) for c in center_lps), center_source)

    # -- points and boxes ---------------------------------------------------------------
    def grid_center_lps(self) -> np.ndarray:
        return self.crop.index_to_lps((np.asarray(self.crop.size, float) - 1.0) / 2.0)

    def crop_index_to_lps(self, index) -> np.ndarray:
        return self.crop.index_to_lps(index)

    def lps_to_crop_index(self, points) -> np.ndarray:
        return self.crop.lps_to_index(points)

    def crop_index_to_t2_index(self, index) -> np.ndarray:
        return self.t2.lps_to_index(self.crop.index_to_lps(index))

    def t2_index_to_crop_index(self, index) -> np.ndarray:
        return self.crop.lps_to_index(self.t2.index_to_lps(index))

    def box_crop_to_lps(self, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        """A box given by continuous crop-index corners (x, y, z) -> LPS [min, max] corners
        (the axis-aligned hull of its 8 corners; exact when the T2 axes are the LPS axes)."""
        corners = self.crop.index_to_lps(_box_corners(np.asarray(lo, float), np.asarray(hi, float)))
        return corners.min(axis=0), corners.max(axis=0)

    def box_crop_to_t2(self, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        """A crop-index box -> T2 continuous-index box (exact: both grids share directions)."""
        corners = self.crop_index_to_t2_index(_box_corners(np.asarray(lo, float), np.asarray(hi, float)))
        return corners.min(axis=0), corners.max(axis=0)

    def box_lps_to_crop(self, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        corners = self.crop.lps_to_index(_box_corners(np.asarray(lo, float), np.asarray(hi, float)))
        return corners.min(axis=0), corners.max(axis=0)

    def mdt_box_to_lps(self, box) -> tuple[np.ndarray, np.ndarray]:
        """An MDT Retina U-Net box (y1, x1, y2, x2, z1, z2) in (y, x, z) crop array
        coordinates -> LPS [min, max] corners. MDT boxes are continuous with voxel centres at
        integers (its first anchor is centred on (0, 0, 0)), the convention used here."""
        y1, x1, y2, x2, z1, z2 = (float(v) for v in box)
        return self.box_crop_to_lps((x1, y1, z1), (x2, y2, z2))

    def t2_offset(self) -> Optional[tuple[int, int, int]]:
        """When crop voxels coincide with T2 voxels (same direction and spacing, origin on the
        T2 lattice — the usual 0.5×0.5×3 mm ProstateX T2), the T2 index of crop voxel (0, 0, 0);
        else None. Cropping is then a plain array copy, identical to interpolating there."""
        if not np.allclose(self.crop.direction, self.t2.direction, atol=1e-6):
            return None
        drift = np.abs(np.asarray(self.crop.spacing) - np.asarray(self.t2.spacing)) * np.asarray(self.crop.size)
        if np.any(drift > 1e-3 * np.asarray(self.crop.spacing)):
            return None
        start = self.t2.lps_to_index(self.crop.origin)
        if np.any(np.abs(start - np.round(start)) > 1e-3):
            return None
        return tuple(int(v) for v in np.round(start))

    def inside_t2_mask(self) -> np.ndarray:
        """(z, y, x) boolean array: crop voxels whose centre lies inside the T2 field of view."""
        nx, ny, nz = self.crop.size
        kk, jj, ii = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
        idx = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1).astype(float)
        t2_idx = self.crop_index_to_t2_index(idx)
        upper = np.asarray(self.t2.size, float) - 0.5
        inside = np.all((t2_idx >= -0.5) & (t2_idx <= upper), axis=1)
        return inside.reshape(nz, ny, nx)

    def extract_from_t2_array(self, t2_array: np.ndarray) -> np.ndarray:
        """Copy the crop out of a (z, y, x) array on the T2 grid (zeros outside it); needs
        `t2_offset()` to be not None."""
        offset = self.t2_offset()
        if offset is None:
            raise ValueError("the crop grid is not aligned with the T2 voxels; resample instead")
        out = np.zeros(tuple(reversed(self.crop.size)), dtype=t2_array.dtype)
        src, dst = [], []
        for axis in (2, 1, 0):  # array axes z, y, x <- index axes
            lo = offset[axis]
            a0, a1 = max(lo, 0), min(lo + self.crop.size[axis], self.t2.size[axis])
            if a1 <= a0:
                return out
            src.append(slice(a0, a1))
            dst.append(slice(a0 - lo, a1 - lo))
        out[tuple(dst)] = t2_array[tuple(src)]
        return out

    # -- maps ---------------------------------------------------------------------------
    def as_crop_image(self, data, layout: str = "zyx") -> sitk.Image:
        """A map on the crop grid (array in `layout` "zyx" or MDT "yxz", or an image) as an image."""
        if isinstance(data, sitk.Image):
            if not self.crop.same_as(data):
                raise ValueError("the image is not on this crop grid")
            return data
        arr = np.asarray(data)
        if layout == "yxz":
            arr = np.transpose(arr, (2, 0, 1))
        elif layout != "zyx":
            raise ValueError(f"unknown layout {layout!r}; use 'zyx' or 'yxz'")
        expected = tuple(reversed(self.crop.size))
        if arr.shape != expected:
            raise ValueError(f"map of shape {arr.shape} does not match the crop grid (z, y, x) = {expected}")
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        elif arr.dtype == bool:
            arr = arr.astype(np.uint8)
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        img.SetSpacing(self.crop.spacing)
        img.SetOrigin(self.crop.origin)
        img.SetDirection(self.crop.direction)
        return img

    def to_t2(self, data, interpolation: str = "linear", layout: str = "zyx") -> sitk.Image:
        """Resample a map on the crop grid (probability map: "linear"; label map: "label"
        or "nearest") back onto the T2 grid; outside the crop it is 0."""
        return resample(self.as_crop_image(data, layout), self.t2, interpolation)

    def from_t2(self, image: sitk.Image, interpolation: str = "bspline") -> sitk.Image:
        """Resample any image (usually on the T2 grid) onto the crop grid."""
        return resample(image, self.crop, interpolation)

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"crop": self.crop.to_dict(), "t2": self.t2.to_dict(),
                "center_lps": list(self.center_lps), "center_source": self.center_source}

    @classmethod
    def from_dict(cls, d: dict) -> "CropGeometry":
        return cls(Grid.from_dict(d["crop"]), Grid.from_dict(d["t2"]),
                   tuple(float(v) for v in d["center_lps"]), str(d["center_source"]))
