"""Anchor boxes of the Retina U-Net (main paper "Hyperparameters": one aspect ratio, scales
from 4x4x1 to 28x28x9 voxels; exact layout of the toolkit's
generate_pyramid_anchors, MDT_ProstateX/utils/model_utils.py).

Coordinates are [y1, x1, y2, x2, z1, z2] in input-voxel units. Anchor centres sit at
index * stride (no half-stride offset) and anchors are not clipped. Order: level P2..P5,
then y, x, z, then scale, matching the heads' reshaping.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .network import anchor_scales, feature_shapes


def generate_anchors(cfg: dict[str, Any]) -> np.ndarray:
    """All anchors for cfg["patch_size"] as a float64 (N, 6) array."""
    scales_xy, scales_z = anchor_scales(cfg)
    out = []
    for level, (ny, nx, nz) in enumerate(feature_shapes(cfg)):
        sxy = cfg["backbone_strides_xy"][level]
        sz = cfg["backbone_strides_z"][level]
        cy, cx, cz = np.meshgrid(np.arange(ny) * float(sxy), np.arange(nx) * float(sxy),
                                 np.arange(nz) * float(sz), indexing="ij")
        centres = np.stack([cy, cx, cz], axis=-1).reshape(-1, 1, 3)  # (positions, 1, 3)
        hxy = np.asarray(scales_xy[level], dtype=np.float64).reshape(1, -1)
        hz = np.asarray(scales_z[level], dtype=np.float64).reshape(1, -1)
        boxes = np.stack([centres[..., 0] - hxy / 2, centres[..., 1] - hxy / 2,
                          centres[..., 0] + hxy / 2, centres[..., 1] + hxy / 2,
                          centres[..., 2] - hz / 2, centres[..., 2] + hz / 2], axis=-1)
        out.append(boxes.reshape(-1, 6))
    return np.concatenate(out, axis=0)


def anchors_tensor(cfg: dict[str, Any], device=None) -> torch.Tensor:
    """float32 copy used for decoding."""
    return torch.from_numpy(generate_anchors(cfg).astype(np.float32)).to(device)
