"""Retina U-Net losses (MDT_ProstateX/models/retina_unet.py heads, main paper "Model training and validation").

Classification: softmax cross-entropy over positives and as many negatives (at least 1),
the negatives drawn at random from the `shem_poolsize` x that many hardest ones
(stochastic hard-negative mining). Box regression: smooth L1 on positive anchors.
Segmentation: soft Dice + cross-entropy. Images whose lesions have no GGG (e.g. the
ProstateX challenge cases) skip the classification loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .box_coding import encode
from .targets import NEGATIVE, UNKNOWN_CLASS


def class_loss(logits: torch.Tensor, match: torch.Tensor, poolsize: int, rng: np.random.Generator) -> torch.Tensor:
    pos = torch.nonzero(match > 0).flatten()
    neg = torch.nonzero(match == NEGATIVE).flatten()
    parts, targets = [], []
    if pos.numel():
        parts.append(logits[pos])
        targets.append(match[pos])
    if neg.numel():
        count = max(1, int(pos.numel()))
        with torch.no_grad():
            fg = torch.softmax(logits[neg].float(), dim=1)[:, 1:].max(dim=1).values
        pool = min(neg.numel(), count * poolsize)
        hardest = torch.topk(fg, pool).indices.cpu().numpy()
        chosen = rng.choice(hardest, size=min(count, pool), replace=False)
        sel = neg[torch.as_tensor(chosen, dtype=torch.long, device=neg.device)]
        parts.append(logits[sel])
        targets.append(torch.zeros(sel.numel(), dtype=torch.long, device=logits.device))
    if not parts:
        return logits.sum() * 0.0
    return F.cross_entropy(torch.cat(parts).float(), torch.cat(targets))


def box_loss(deltas: torch.Tensor, match: torch.Tensor, gt_index: torch.Tensor, gt_boxes: np.ndarray,
             anchors: torch.Tensor, std_dev) -> torch.Tensor:
    pos = torch.nonzero((match > 0) | (match == UNKNOWN_CLASS)).flatten()
    if pos.numel() == 0:
        return deltas.sum() * 0.0
    gt = torch.as_tensor(gt_boxes, dtype=torch.float32, device=deltas.device)[gt_index[pos]]
    target = encode(anchors[pos].float(), gt, std_dev)
    return F.smooth_l1_loss(deltas[pos].float(), target)


def seg_loss(seg_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice (foreground and background, batch-wise) + cross-entropy; target (b, Y, X, Z) 0/1."""
    logits = seg_logits.float()
    ce = F.cross_entropy(logits, target.long())
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target.long(), probs.shape[1]).permute(0, 4, 1, 2, 3).float()
    dims = (0, 2, 3, 4)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + 1e-5) / (denom + 1e-5)
    return ce + (1.0 - dice.mean())


def total_loss(outputs, batch_targets: list[dict[str, Any]], anchors: torch.Tensor, cfg: dict[str, Any],
               seg_target: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    cls_logits, deltas, seg_logits = outputs
    c_losses, b_losses = [], []
    for i, t in enumerate(batch_targets):
        match = t["match"].to(cls_logits.device)
        gt_index = t["gt_index"].to(cls_logits.device)
        if t["classify"]:
            c_losses.append(class_loss(cls_logits[i], match, int(cfg.get("shem_poolsize", 10)), rng))
        b_losses.append(box_loss(deltas[i], match, gt_index, t["gt_boxes"], anchors, cfg["bbox_std_dev"]))
    c = torch.stack(c_losses).mean() if c_losses else cls_logits.sum() * 0.0
    b = torch.stack(b_losses).mean()
    s = seg_loss(seg_logits, seg_target)
    return c + b + s, {"class": float(c.detach()), "box": float(b.detach()), "seg": float(s.detach())}
