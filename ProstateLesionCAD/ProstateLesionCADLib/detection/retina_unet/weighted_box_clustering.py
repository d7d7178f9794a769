"""Weighted box clustering (WBC) of ensemble predictions (main paper "Epoch and CV
ensembling during testing"; exact rules from
MDT_ProstateX/predictor.py of OscarPellicer/prostate_lesion_detection).

Run per case and per foreground class. Each cluster's score is the weighted mean of its
members' scores, diluted by the number of ensemble members that predicted nothing there;
its box is the score-and-weight-averaged box.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .box_coding import iou_matrix, volume


@dataclass
class Box:
    coords: list[float]  # y1, x1, y2, x2, z1, z2 (voxels of the network input)
    score: float
    cls: int  # 1..head_classes-1
    member_id: str  # which ensemble member (and augmentation) predicted it
    class_probs: list[float] = field(default_factory=list)  # optional softmax vector of the anchor


def cluster_boxes(boxes: list[Box], n_ens: int, iou_threshold: float = 1e-5,
                  min_score: float = 0.01) -> list[Box]:
    """WBC over boxes of ONE class. `n_ens` = expected number of predictions per location.

    Missing predictions are n_ens minus the number of distinct `member_id`s in a cluster;
    the toolkit's fold-pooling quirk is reproduced by giving members ids that repeat across
    folds (see inference.member_ids).
    """
    if not boxes:
        return []
    coords = torch.tensor([b.coords for b in boxes], dtype=torch.float64)
    scores = torch.tensor([b.score for b in boxes], dtype=torch.float64)
    ids = [b.member_id for b in boxes]
    has_probs = all(len(b.class_probs) == len(boxes[0].class_probs) and b.class_probs for b in boxes)
    probs = torch.tensor([b.class_probs for b in boxes], dtype=torch.float64) if has_probs else None
    cls = boxes[0].cls
    vol = volume(coords, plus_one=True)
    remaining = torch.argsort(scores, descending=True, stable=True)
    out = []
    while remaining.numel() > 0:
        top = remaining[0]
        iou = iou_matrix(coords[top].unsqueeze(0), coords[remaining], plus_one=True)[0]
        in_cluster = iou > iou_threshold
        members = remaining[in_cluster]
        w = iou[in_cluster] * vol[members]  # patch-centre factor is 1 for whole-volume inference
        s = scores[members]
        n_missing = max(0, n_ens - len({ids[int(i)] for i in members}))
        denom = w.sum() + n_missing * w.mean()
        score = float((s * w).sum() / denom) if float(denom) > 0 else 0.0
        sw = s * w
        if float(sw.sum()) > 0:
            box = (coords[members] * sw[:, None]).sum(0) / sw.sum()
        else:
            box = coords[members].mean(0)
        if score > min_score:
            cp = []
            if probs is not None:
                cp = [float(v) for v in (probs[members] * w[:, None]).sum(0) / (denom if float(denom) > 0 else 1.0)]
            out.append(Box([float(v) for v in box], score, cls, "wbc", cp))
        remaining = remaining[~in_cluster]
    return out


def weighted_box_clustering(boxes: list[Box], n_ens: int, iou_threshold: float = 1e-5,
                            min_score: float = 0.01) -> list[Box]:
    """WBC separately per class; boxes of different classes never merge."""
    out: list[Box] = []
    for c in sorted({b.cls for b in boxes}):
        out += cluster_boxes([b for b in boxes if b.cls == c], n_ens, iou_threshold, min_score)
    return sorted(out, key=lambda b: -b.score)
