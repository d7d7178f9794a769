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


# A CG/PZ split is checked for what any prostate shows: one central gland (islands above
# MIN_ISLAND_CM3 are counted; a voxel or two of noise is not), a peripheral zone lying mostly in
# the posterior half of the gland (the PZ wraps the CG posteriorly and laterally), and a smooth
# CG/PZ boundary (a ragged one changes much under an opening + closing of radius SMOOTH_MM).
MIN_ISLAND_CM3 = 0.05
MIN_SLICE_ISLAND_MM2 = 10.0  # in-plane islands: a CG joined in 3D can still be in pieces on its slices
MAX_SLICES_WITH_ISLANDS = 1  # a lobe tip at the base or apex may show apart on one slice
MIN_PZ_POSTERIOR_SHARE = 0.5  # true phantom zones: 0.59-0.71
SMOOTH_MM = 2.0
MAX_CG_ROUGHNESS = 0.08  # true phantom zones: at most 0.003


def _posterior_share(pz: np.ndarray, gland: np.ndarray, image: sitk.Image) -> float:
    """Share of the PZ voxels behind the gland's centroid (LPS +y is posterior)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = np.array(image.GetSpacing())

    def y_mm(idx_zyx: np.ndarray) -> np.ndarray:
        return (idx_zyx[:, ::-1] * spacing) @ direction[1]  # the origin cancels in the comparison

    centre = y_mm(np.argwhere(gland)).mean()
    return float((y_mm(np.argwhere(pz)) > centre).mean())


def _roughness(cg: np.ndarray, image: sitk.Image) -> float:
    """Share of CG voxels that an in-plane opening + closing of radius SMOOTH_MM changes."""
    from scipy import ndimage

    sx, sy = image.GetSpacing()[:2]
    ry, rx = max(1, int(round(SMOOTH_MM / sy))), max(1, int(round(SMOOTH_MM / sx)))
    yy, xx = np.mgrid[-ry:ry + 1, -rx:rx + 1]
    disc = ((yy * sy) ** 2 + (xx * sx) ** 2 <= SMOOTH_MM ** 2)[None]  # in-plane only: slices are thick
    smooth = ndimage.binary_closing(ndimage.binary_opening(cg, disc), disc)
    return float((smooth ^ cg).sum() / cg.sum())


def check_zone_split(zones: sitk.Image) -> dict:
    """Shape checks of a CG/PZ label map (1 = CG, 2 = PZ) on the T2 grid: the number of CG islands
    (in 3D, and the slices where the CG is in several in-plane pieces), the PZ share in the
    posterior half of the gland, the CG boundary roughness, and a flag for each that is off.
    Returns {"cg_components", "cg_slices_in_pieces", "pz_posterior_share", "cg_roughness", "flags"}."""
    from scipy import ndimage

    z = sitk.GetArrayFromImage(zones)
    cg, pz = z == 1, z == 2
    out: dict = {"cg_components": 0, "cg_slices_in_pieces": 0, "pz_posterior_share": None, "cg_roughness": None,
                 "flags": []}
    if cg.any():
        labels, count = ndimage.label(cg, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(labels.ravel())[1:] * voxel_volume_cm3(zones)
        out["cg_components"] = int((sizes >= MIN_ISLAND_CM3).sum())
        out["cg_roughness"] = round(_roughness(cg, zones), 3)
        area = zones.GetSpacing()[0] * zones.GetSpacing()[1]
        pieces = []
        for k in np.flatnonzero(cg.any(axis=(1, 2))):
            slice_labels, n = ndimage.label(cg[k], structure=np.ones((3, 3), bool))
            pieces.append(int((np.bincount(slice_labels.ravel())[1:] * area >= MIN_SLICE_ISLAND_MM2).sum()))
        out["cg_slices_in_pieces"] = sum(p > 1 for p in pieces)
    if pz.any():
        out["pz_posterior_share"] = round(_posterior_share(pz, z > 0, zones), 3)
    if out["cg_components"] > 1:
        out["flags"].append(f"the central gland is split into {out['cg_components']} islands (expected one): "
                            "the CG/PZ split is fragmented")
    if out["cg_slices_in_pieces"] > MAX_SLICES_WITH_ISLANDS:
        out["flags"].append(f"the central gland is in several pieces on {out['cg_slices_in_pieces']} slices "
                            "(expected one piece per slice): the CG/PZ split is fragmented")
    if out["pz_posterior_share"] is not None and out["pz_posterior_share"] < MIN_PZ_POSTERIOR_SHARE:
        out["flags"].append(f"only {100 * out['pz_posterior_share']:.0f}% of the peripheral zone lies in the "
                            f"posterior half of the gland (expected at least {100 * MIN_PZ_POSTERIOR_SHARE:.0f}%)")
    if out["cg_roughness"] is not None and out["cg_roughness"] > MAX_CG_ROUGHNESS:
        out["flags"].append(f"the CG/PZ boundary is ragged: smoothing it by {SMOOTH_MM:g} mm changes "
                            f"{100 * out['cg_roughness']:.0f}% of the central gland (expected at most "
                            f"{100 * MAX_CG_ROUGHNESS:.0f}%)")
    return out
