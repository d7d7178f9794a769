"""Per-model test-time decoding of the Retina U-Net outputs (as in OscarPellicer/prostate_lesion_detection,
MDT_ProstateX/models/retina_unet.py: refine_detections and get_results).

softmax over classes -> top `pre_nms_limit` (anchor, class) pairs -> decode and clip to
the patch -> round -> per-class NMS (IoU 1e-5) -> 30 best boxes over all classes ->
drop empty boxes and scores below `min_confidence`. Segmentation: argmax label map.
"""

from __future__ import annotations

from typing import Any

import torch

from .box_coding import clip, decode
from .nms import nms_3d
from .weighted_box_clustering import Box


def refine_detections(class_logits: torch.Tensor, bbox_deltas: torch.Tensor, anchors: torch.Tensor,
                      cfg: dict[str, Any], member_id: str = "0",
                      min_confidence: float | None = None, drop_empty: bool = True) -> list[list[Box]]:
    """Boxes per batch element from raw head outputs (b, A, C) and (b, A, 6).

    `drop_empty=False` and `min_confidence=0` give the toolkit's refine_detections output
    before get_results filters it (used to compare with the reference vector).
    """
    y, x, z = cfg["patch_size"]
    window = [0, 0, y, x, 0, z]
    scale = torch.tensor([y, x, y, x, z, z], dtype=torch.float32, device=anchors.device)
    min_conf = cfg["min_confidence"] if min_confidence is None else min_confidence
    probs = torch.softmax(class_logits.float(), dim=2)
    b, n_anchors, n_cls = probs.shape
    fg = probs[:, :, 1:].reshape(-1)
    k = min(int(cfg["pre_nms_limit"]), fg.numel())
    top_scores, flat = torch.topk(fg, k, sorted=True)
    batch_ix = flat // (n_anchors * (n_cls - 1))
    anchor_ix = (flat // (n_cls - 1)) % n_anchors
    class_ix = flat % (n_cls - 1) + 1
    deltas = bbox_deltas.float()[batch_ix, anchor_ix]
    # the toolkit normalises anchors by the patch size before decoding and scales back after
    boxes = decode(anchors[anchor_ix] / scale, deltas, cfg["bbox_std_dev"])
    boxes = clip(boxes, [w / s for w, s in zip(window, scale.tolist())])
    boxes = torch.round(boxes * scale)
    results: list[list[Box]] = []
    for bi in range(b):
        keep_all = []
        for c in range(1, n_cls):
            sel = torch.nonzero((batch_ix == bi) & (class_ix == c)).flatten()
            if sel.numel() == 0:
                continue
            # only the 30 best boxes over all classes survive, so no class needs more than 30
            kept = nms_3d(boxes[sel], top_scores[sel], cfg["detection_nms_threshold"],
                          max_keep=int(cfg["max_instances_per_batch_element"]))
            keep_all.append(sel[kept])
        if not keep_all:
            results.append([])
            continue
        keep = torch.cat(keep_all)
        keep = keep[torch.argsort(top_scores[keep], descending=True, stable=True)]
        keep = keep[: int(cfg["max_instances_per_batch_element"])]
        out = []
        for i in keep.tolist():
            coords = boxes[i].to(torch.int64)
            vol = (coords[2] - coords[0]) * (coords[3] - coords[1]) * (coords[5] - coords[4])
            score = float(top_scores[i])
            if (drop_empty and int(vol) <= 0) or score < min_conf:
                continue
            out.append(Box([float(v) for v in coords.tolist()], score, int(class_ix[i]), member_id,
                           [float(v) for v in probs[bi, anchor_ix[i]].tolist()]))
        results.append(out)
    return results
