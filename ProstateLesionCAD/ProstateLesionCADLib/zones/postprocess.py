"""Mask clean-up shared by every zonal backend, and the zone arithmetic of the cascade.

Main paper, methods "Automated prostate zonal segmentation": the peripheral zone is the
prostate minus the central gland (PZ = prostate − CG). The label map written to disk
uses 1 = CG, 2 = PZ; the prostate is their union.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage

from . import ANTERIOR_BAND, PZ_SHELL_MM

CG_LABEL = 1
PZ_LABEL = 2


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 26-connected component (a CNN's stray islands are never prostate)."""
    mask = np.asarray(mask) > 0
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes in 3D and slice by slice (axis 0 of a z,y,x array = slices).

    Thick slices (3–3.6 mm) mean a hole is often open through the top or bottom slice;
    filling each axial slice too closes those.
    """
    mask = ndimage.binary_fill_holes(np.asarray(mask) > 0)
    for z in range(mask.shape[0]):
        if mask[z].any():
            mask[z] = ndimage.binary_fill_holes(mask[z])
    return mask


def clean_gland(mask: np.ndarray) -> np.ndarray:
    """Largest component, then holes filled: the post-processing applied to every gland mask."""
    return fill_holes(largest_component(mask))


def zones_from_masks(prostate: np.ndarray, cg: np.ndarray) -> np.ndarray:
    """Label map 1 = CG, 2 = PZ from a prostate mask and a CG mask (CG is clipped to the prostate)."""
    prostate = np.asarray(prostate) > 0
    cg = (np.asarray(cg) > 0) & prostate
    zones = np.zeros(prostate.shape, dtype=np.uint8)
    zones[prostate] = PZ_LABEL
    zones[cg] = CG_LABEL
    return zones


def recompute_pz(prostate: np.ndarray, cg: np.ndarray) -> np.ndarray:
    """PZ = prostate − CG (paper, zonal segmentation), as a boolean mask."""
    return (np.asarray(prostate) > 0) & ~(np.asarray(cg) > 0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Sørensen–Dice overlap of two masks (1.0 when both are empty)."""
    a = np.asarray(a) > 0
    b = np.asarray(b) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def one_piece_cg(cg: np.ndarray, prostate: np.ndarray) -> np.ndarray:
    """Central gland as one body: its largest 3D component, on every slice only the in-plane piece
    joined to that slice's largest, with in-plane holes filled (the PZ never lies inside the CG);
    clipped to the prostate. Arrays are (z, y, x)."""
    cg = largest_component(cg)
    out = np.zeros_like(cg)
    for k in np.flatnonzero(cg.any(axis=(1, 2))):
        labels, count = ndimage.label(cg[k], structure=np.ones((3, 3), dtype=bool))
        if count > 1:
            sizes = np.bincount(labels.ravel())[1:]
            out[k] = labels == (int(np.argmax(sizes)) + 1)
        else:
            out[k] = cg[k]
        out[k] = ndimage.binary_fill_holes(out[k])
    return out & (np.asarray(prostate) > 0)


# The peripheral zone is the gland's outer shell behind and beside the central gland: on
# T2-weighted MRI the posterolateral PZ of normal-sized glands measures 10 ± 2.9 mm from the
# CG to the capsule, at most 15.8 mm (mean + 2 SD; Wasserman, Spilseth & Sanghvi, "Prostatic
# peripheral zone thickness: what is normal on MRI?", medRxiv 2020, doi
# 10.1101/2020.03.21.20039149). A "PZ" voxel deeper inside the gland than that is central gland
# misread; the shell thickness PZ_SHELL_MM (16 mm, that upper limit) lives in zones/__init__.py
# for the CLI parser. In front of the mid-coronal plane the PZ only continues as lateral horns:
# the anterior midline in front of the CG is fibromuscular stroma, which the two-zone labelling
# of the main paper counts with the CG (CG = transition + central zone, PZ = the rest). That
# anterior rule is off by default (ANTERIOR_BAND = 0): on held-out phantoms every band tried
# lowered CG and PZ Dice (the phantoms draw a thin PZ layer in front of the CG near the apex;
# figures in README, "Zonal segmentation"), so it is an option for real MRI, not the default.


def _patient_coordinates(shape: tuple[int, ...], image) -> tuple[np.ndarray, np.ndarray]:
    """L and P coordinates (mm, LPS, origin left out) of the voxels of a (z, y, x) array on
    `image`'s grid, from its direction and spacing, broadcast to `shape`."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.array(image.GetSpacing(), dtype=float)
    z, y, x = (np.arange(n, dtype=np.float64).reshape([-1 if a == i else 1 for a in range(3)])
               for i, n in enumerate(shape))
    out = []
    for row in (0, 1):  # patient L, then P
        w = direction[row] * spacing  # mm per step along index x, y, z
        out.append(np.broadcast_to(x * w[0] + y * w[1] + z * w[2], shape))
    return out[0], out[1]


def check_pz_restriction(shell_mm: Optional[float], anterior_band: float) -> None:
    """ParameterError unless the shell is a positive, finite number of mm and the band is ≥ 0; a shell
    of None (the step is off) leaves nothing to check."""
    from ..errors import ParameterError

    if shell_mm is None:
        return
    if not (np.isfinite(shell_mm) and shell_mm > 0 and anterior_band >= 0):
        raise ParameterError(f"The PZ shell must be a positive number of mm and the anterior band 0 or more, "
                             f"got {shell_mm} mm and {anterior_band}.")


def posterior_lateral_pz(cg: np.ndarray, prostate: np.ndarray, image, shell_mm: float = PZ_SHELL_MM,
                         anterior_band: float = ANTERIOR_BAND) -> np.ndarray:
    """Central gland after giving it the "PZ" voxels that cannot be peripheral zone: those deeper
    than `shell_mm` below the gland surface (3D distance in mm), and those anterior to the gland's
    mid-coronal plane (through its centroid; LPS: smaller P) in front of the CG, closer to the CG's
    mid-sagittal line than `anterior_band` × the CG's half-width on that axial slice (0: off; inf:
    all anterior PZ on the slices the CG is on). The CG stays one body (one_piece_cg:
    a moved piece that would be an island of its own stays PZ); the gland (CG ∪ PZ) never changes.

    Arrays are (z, y, x) on the grid of `image` (SimpleITK); the work is done in the canonical
    voxel order (orientation.py) with L and P read from the direction, so any storage order of
    the same study gives the same zones."""
    import SimpleITK as sitk

    from ..orientation import array_onto_grid, to_canonical

    check_pz_restriction(shell_mm, anterior_band)
    prostate = np.asarray(prostate) > 0
    cg = (np.asarray(cg) > 0) & prostate
    if not (prostate & ~cg).any() or not cg.any():
        return cg
    grid = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    grid.CopyInformation(image)
    canonical = to_canonical(grid)
    if canonical is not grid:
        p_img = sitk.GetImageFromArray(prostate.astype(np.uint8))
        c_img = sitk.GetImageFromArray(cg.astype(np.uint8))
        p_img.CopyInformation(image)
        c_img.CopyInformation(image)
        out = _posterior_lateral_canonical(sitk.GetArrayFromImage(to_canonical(c_img)) > 0,
                                           sitk.GetArrayFromImage(to_canonical(p_img)) > 0,
                                           canonical, shell_mm, anterior_band)
        return array_onto_grid(out, canonical, grid)
    return _posterior_lateral_canonical(cg, prostate, grid, shell_mm, anterior_band)


def _posterior_lateral_canonical(cg: np.ndarray, prostate: np.ndarray, image, shell_mm: float,
                                 anterior_band: float) -> np.ndarray:
    pz = prostate & ~cg
    spacing_zyx = np.array(image.GetSpacing(), dtype=float)[::-1]
    padded = np.pad(prostate, 1)  # the image border is outside the gland too
    depth = ndimage.distance_transform_edt(padded, sampling=spacing_zyx)[1:-1, 1:-1, 1:-1]
    move = depth > shell_mm
    if anterior_band <= 0:
        return one_piece_cg(cg | (pz & move), prostate)
    lateral, posterior = _patient_coordinates(prostate.shape, image)
    anterior = posterior < posterior[prostate].mean()
    for k in np.flatnonzero(cg.any(axis=(1, 2))):  # axial slices with CG: canonical axis 0 is S
        on_slice = lateral[k][cg[k]]
        mid = on_slice.mean()
        half_width = np.abs(on_slice - mid).max()
        move[k] |= anterior[k] & (np.abs(lateral[k] - mid) < anterior_band * half_width)
    return one_piece_cg(cg | (pz & move), prostate)
