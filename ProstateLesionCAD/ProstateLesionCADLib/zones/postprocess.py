"""Mask clean-up shared by every zonal backend, and the zone arithmetic of the cascade.

Main paper, methods "Automated prostate zonal segmentation": the peripheral zone is the
prostate minus the central gland (PZ = prostate − CG). The label map written to disk
uses 1 = CG, 2 = PZ; the prostate is their union.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

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
