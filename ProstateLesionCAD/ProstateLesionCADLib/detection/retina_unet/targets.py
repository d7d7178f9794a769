"""Training targets of the Retina U-Net (MDT_ProstateX/models/retina_unet.py and
utils/model_utils.py of OscarPellicer/prostate_lesion_detection).

GT boxes are the voxel-index extent of each lesion widened by one voxel on each side.
Anchors with IoU >= 0.5 to a GT box are positive, anchors whose best IoU is < 0.01 are
negative, every GT box also gets its best anchor, and at most
`rpn_train_anchors_per_image // 2` positives are kept per image.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from .box_coding import iou_matrix

NEGATIVE = -1
NEUTRAL = 0
UNKNOWN_CLASS = -2  # positive for box regression, ignored by the classifier


def boxes_from_labels(labels: np.ndarray, lesion_ggg: dict[int, Optional[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 6) boxes (y1, x1, y2, x2, z1, z2) and (n,) network classes (GGG + 1, or -2 when
    the GGG is unknown) of the labelled lesions in a (Y, X, Z) label map."""
    boxes, classes = [], []
    for label in sorted(int(v) for v in np.unique(labels) if v > 0):
        idx = np.nonzero(labels == label)
        lo = [int(i.min()) - 1 for i in idx]
        hi = [int(i.max()) + 1 for i in idx]
        boxes.append([lo[0], lo[1], hi[0], hi[1], lo[2], hi[2]])
        ggg = lesion_ggg.get(label)
        classes.append(UNKNOWN_CLASS if ggg is None else min(int(ggg), 3) + 1)
    if not boxes:
        return np.zeros((0, 6), np.float64), np.zeros((0,), np.int64)
    return np.asarray(boxes, np.float64), np.asarray(classes, np.int64)


def match_anchors(anchors: torch.Tensor, gt_boxes: np.ndarray, gt_classes: np.ndarray, cfg: dict[str, Any],
                  rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per anchor: match (NEGATIVE, NEUTRAL, class 1..4 or UNKNOWN_CLASS) and GT index."""
    n = anchors.shape[0]
    match = torch.full((n,), NEGATIVE, dtype=torch.long)
    gt_index = torch.zeros((n,), dtype=torch.long)
    if len(gt_boxes) == 0:
        return match, gt_index
    gt = torch.as_tensor(gt_boxes, dtype=torch.float64)
    iou = iou_matrix(anchors.double(), gt)  # (n, g)
    best_iou, best_gt = iou.max(dim=1)
    match[best_iou >= 0.01] = NEUTRAL
    positive = best_iou >= float(cfg.get("anchor_matching_iou", 0.5))
    gt_index[:] = best_gt
    best_anchor = iou.argmax(dim=0)  # every GT box gets its best anchor
    positive[best_anchor] = True
    gt_index[best_anchor] = torch.arange(len(gt_boxes))
    pos_ix = torch.nonzero(positive).flatten().numpy()
    limit = int(cfg.get("rpn_train_anchors_per_image", 6)) // 2
    if len(pos_ix) > limit:
        # keep each GT's best anchor, fill up with random others
        must = np.unique(best_anchor.numpy())[:limit]
        rest = np.setdiff1d(pos_ix, must)
        extra = rng.choice(rest, size=max(0, limit - len(must)), replace=False) if len(rest) else np.array([], int)
        keep = np.concatenate([must, extra]).astype(np.int64)
        dropped = np.setdiff1d(pos_ix, keep)
        match[torch.as_tensor(dropped, dtype=torch.long)] = NEUTRAL
        pos_ix = keep
    classes = torch.as_tensor(gt_classes, dtype=torch.long)
    pos = torch.as_tensor(pos_ix, dtype=torch.long)
    match[pos] = classes[gt_index[pos]]
    return match, gt_index
