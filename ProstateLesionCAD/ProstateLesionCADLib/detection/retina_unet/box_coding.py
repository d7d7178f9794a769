"""Box deltas and overlaps for [y1, x1, y2, x2, z1, z2] boxes (the toolkit's
utils/model_utils.py in OscarPellicer/prostate_lesion_detection/MDT_ProstateX).

Deltas are (dy, dx, dz, log dh, log dw, log dd) relative to the anchor, divided by the
std-devs [0.1, 0.1, 0.1, 0.2, 0.2, 0.2]; decoding multiplies them back.
"""

from __future__ import annotations

from typing import Sequence

import torch


def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    size = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1], boxes[:, 5] - boxes[:, 4]], dim=1)
    centre = torch.stack([boxes[:, 0], boxes[:, 1], boxes[:, 4]], dim=1) + 0.5 * size
    return centre, size


def _from_centre_size(centre: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    lo = centre - 0.5 * size
    hi = lo + size
    return torch.stack([lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1], lo[:, 2], hi[:, 2]], dim=1)


def encode(anchors: torch.Tensor, gt: torch.Tensor, std_dev: Sequence[float]) -> torch.Tensor:
    """Regression targets of ground-truth boxes `gt` against matched `anchors` (same length)."""
    ac, asz = _centre_size(anchors)
    gc, gsz = _centre_size(gt)
    deltas = torch.cat([(gc - ac) / asz, torch.log(gsz / asz)], dim=1)
    return deltas / torch.as_tensor(std_dev, dtype=deltas.dtype, device=deltas.device)


def decode(anchors: torch.Tensor, raw_deltas: torch.Tensor, std_dev: Sequence[float]) -> torch.Tensor:
    """Apply raw regressor outputs (units of std-dev) to anchors."""
    d = raw_deltas * torch.as_tensor(std_dev, dtype=raw_deltas.dtype, device=raw_deltas.device)
    centre, size = _centre_size(anchors)
    centre = centre + d[:, :3] * size
    size = size * torch.exp(d[:, 3:])
    return _from_centre_size(centre, size)


def clip(boxes: torch.Tensor, window: Sequence[float]) -> torch.Tensor:
    """Clip to window [y1, x1, y2, x2, z1, z2]."""
    y1, x1, y2, x2, z1, z2 = window
    lo = torch.as_tensor([y1, x1, y1, x1, z1, z1], dtype=boxes.dtype, device=boxes.device)
    hi = torch.as_tensor([y2, x2, y2, x2, z2, z2], dtype=boxes.dtype, device=boxes.device)
    return torch.maximum(torch.minimum(boxes, hi), lo)


def volume(boxes: torch.Tensor, plus_one: bool = False) -> torch.Tensor:
    e = 1.0 if plus_one else 0.0
    return (boxes[:, 2] - boxes[:, 0] + e) * (boxes[:, 3] - boxes[:, 1] + e) * (boxes[:, 5] - boxes[:, 4] + e)


def iou_matrix(a: torch.Tensor, b: torch.Tensor, plus_one: bool = False) -> torch.Tensor:
    """Pairwise 3D IoU (len(a), len(b)); `plus_one` counts voxel extents as max - min + 1."""
    e = 1.0 if plus_one else 0.0
    lo_y = torch.maximum(a[:, None, 0], b[None, :, 0])
    lo_x = torch.maximum(a[:, None, 1], b[None, :, 1])
    hi_y = torch.minimum(a[:, None, 2], b[None, :, 2])
    hi_x = torch.minimum(a[:, None, 3], b[None, :, 3])
    lo_z = torch.maximum(a[:, None, 4], b[None, :, 4])
    hi_z = torch.minimum(a[:, None, 5], b[None, :, 5])
    inter = ((hi_y - lo_y + e).clamp(min=0) * (hi_x - lo_x + e).clamp(min=0) * (hi_z - lo_z + e).clamp(min=0))
    union = volume(a, plus_one)[:, None] + volume(b, plus_one)[None, :] - inter
    return inter / union.clamp(min=1e-12)
