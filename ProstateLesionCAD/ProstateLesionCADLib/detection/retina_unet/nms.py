"""Greedy 3D non-maximum suppression without torchvision (torch in and out, numpy inside),
as MDT_ProstateX/models/retina_unet.py applies it per class."""

from __future__ import annotations

import numpy as np
import torch


def nms_3d(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
           max_keep: int | None = None) -> torch.Tensor:
    """Indices of kept boxes, highest score first.

    A box is dropped when its IoU (no +1 convention) with a kept, higher-scoring box exceeds
    `iou_threshold`. With `max_keep`, only the best `max_keep` survivors are returned (greedy
    NMS finds survivors in score order, so stopping early changes nothing above them). Each step compares the best remaining box with all remaining ones, so
    memory stays linear in the number of boxes (tens of thousands of candidates per class).
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    # Boxes of zero volume overlap nothing (IoU 0): they are always kept and suppress nothing.
    size = boxes[:, [2, 3, 5]] - boxes[:, [0, 1, 4]]
    empty = (size <= 0).any(dim=1)
    kept = _greedy(boxes, order[~empty[order]], iou_threshold, max_keep)
    merged = torch.cat([kept, order[empty[order]]])
    merged = merged[torch.argsort(scores[merged], descending=True, stable=True)]
    return merged if max_keep is None else merged[:max_keep]


def _greedy(boxes: torch.Tensor, remaining: torch.Tensor, iou_threshold: float,
            max_keep: int | None) -> torch.Tensor:
    # numpy per step: a step costs a few microseconds instead of a dozen small torch calls
    # (NMS was half of a demo validation pass); same IoU arithmetic as box_coding.iou_matrix
    if remaining.numel() == 0:
        return remaining
    b = boxes[remaining].detach().cpu().numpy()
    lo, hi = b[:, [0, 1, 4]], b[:, [2, 3, 5]]
    vol = np.prod(hi - lo, axis=1)
    idx = np.arange(len(b))
    keep = []
    while idx.size:
        best = idx[0]
        keep.append(best)
        if idx.size == 1 or (max_keep is not None and len(keep) >= max_keep):
            break
        rest = idx[1:]
        inter = np.prod(np.clip(np.minimum(hi[best], hi[rest]) - np.maximum(lo[best], lo[rest]), 0, None), axis=1)
        iou = inter / np.maximum(vol[best] + vol[rest] - inter, 1e-12)
        idx = rest[iou <= iou_threshold]
    return remaining[torch.as_tensor(np.asarray(keep), device=remaining.device)]
