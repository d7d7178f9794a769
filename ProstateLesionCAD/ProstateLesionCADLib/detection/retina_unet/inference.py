"""Detector inference: fold x epoch ensemble, WBC, optional mirror TTA, mapping to LPS.

Main paper, "Epoch and CV ensembling during testing": every member predicts the whole
crop; segmentation maps are averaged and boxes of all members are merged per class by
weighted box clustering (IoU 1e-5). The toolkit's details: OscarPellicer/prostate_lesion_detection,
MDT_ProstateX/models/retina_unet.py and MDT_ProstateX/predictor.py.

The detector takes a pre-processed channel stack plus its crop geometry
(`preprocessing.Preprocessed`), so case loading, registration and zonal segmentation
stay in their own modules; `pipeline.run_pipeline` runs them in order on a case.
"""

from __future__ import annotations

import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ...errors import CaseError, ModelError, ParameterError
from ...models.package import ModelPackage
from ...progress import silent
from .anchors import anchors_tensor
from .decoding import refine_detections
from .ensemble import member_id, members, network_config, read_member, wbc_pooling
from .network import RetinaUNet
from .weighted_box_clustering import Box, weighted_box_clustering

MASK_CHANNELS = ("PROSTATE", "CG", "PZ")
DROP_GROUPS = {"DWI": ("DWI_LOW", "DWI_HIGH"), "DCE": ("DCE_T10", "DCE_T20", "DCE_T30")}
# mirror TTA (toolkit test_aug): identity, flip y, flip x, flip y and x (tensor dims 2, 3)
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (2, 3))


class DetectorWarning(UserWarning):
    """A channel the model uses was blanked (missing in the case, model trained with channel drop)."""


def expand_drop(drop: Sequence[str]) -> list[str]:
    """`--drop KTRANS,DCE` -> channel names; T2 and masks cannot be dropped."""
    out: list[str] = []
    for name in drop:
        name = name.strip().upper()
        if not name:
            continue
        if name == "T2" or name in MASK_CHANNELS:
            raise ParameterError(f"--drop {name}: T2 and the prostate/zone masks are always needed and cannot be dropped.")
        out += list(DROP_GROUPS.get(name, (name,)))
    return out


@dataclass
class ModelInput:
    array: np.ndarray  # (C, Y, X, Z) float32 in the model's channel order
    blanked: list[str] = field(default_factory=list)  # channels set to zero (missing or dropped)
    messages: list[str] = field(default_factory=list)


def model_input(prep, card: dict[str, Any], drop: Sequence[str] = ()) -> ModelInput:
    """The model's channels from a pre-processed case, in MDT (C, Y, X, Z) layout.

    A channel the case lacks is an error unless the model was trained with channel drop
    for it (then it stays blank and a warning is issued); `drop` blanks channels on purpose.
    """
    channels = list(card.get("channels") or [])
    if not channels:
        raise ModelError(f"Model '{card.get('name')}': model.json lists no input channels.")
    unknown = [c for c in channels if c not in prep.channels]
    if unknown:
        raise ModelError(f"Model '{card.get('name')}' uses channels {unknown} that the pre-processing does not produce.")
    dropped = expand_drop(drop)
    bad = [c for c in dropped if c not in prep.channels]
    if bad:
        raise ParameterError(f"--drop: unknown channel(s) {bad}; use any of KTRANS, DCE, DWI, ADC, "
                             f"{', '.join(c for c in prep.channels if c != 'T2' and c not in MASK_CHANNELS)}.")
    missing = set(prep.missing())
    droppable = set((card.get("channel_drop") or {}).get("channels") or [])
    trained_with_drop = bool((card.get("channel_drop") or {}).get("trained_with"))
    array = prep.to_mdt(channels).astype(np.float32, copy=True)
    result = ModelInput(array)
    for i, name in enumerate(channels):
        if name in dropped:
            array[i] = 0.0
            result.blanked.append(name)
            result.messages.append(f"{name} dropped on request")
        elif name in missing:
            if name == "T2" or name in MASK_CHANNELS:
                raise CaseError(f"Case {prep.case_id}: channel {name} is missing, and the detector cannot run "
                                "without T2 and the prostate/zone masks.")
            if not (trained_with_drop and name in droppable):
                raise CaseError(f"Case {prep.case_id} has no {name}, which model '{card.get('name')}' needs "
                                "(it was not trained to work without it).")
            array[i] = 0.0
            result.blanked.append(name)
            msg = f"case {prep.case_id} has no {name}: channel left blank (model trained with channel drop)"
            result.messages.append(msg)
            warnings.warn(msg, DetectorWarning, stacklevel=2)
    return result


@dataclass
class EnsembleOutput:
    boxes: list[Box]  # after WBC; coords (y1, x1, y2, x2, z1, z2) in crop voxels
    seg_mean: np.ndarray  # (Y, X, Z) float32: mean over members (and TTA) of the lesion maps
    n_predictions: int
    timings: dict[str, float] = field(default_factory=dict)


def _device(choice: str) -> torch.device:
    from ...device import resolve_device
    return torch.device(resolve_device({"cuda": "gpu"}.get(choice, choice)).torch_name)


class RetinaUNetDetector:
    """All members of a detector package, ready to predict on (C, Y, X, Z) arrays.

    Members are read from disk one at a time during `predict` (25 published checkpoints
    would take about 0.6 GB at once); `states` may also hold state_dicts directly.
    """

    def __init__(self, pkg: ModelPackage, device: str = "auto"):
        self.pkg = pkg
        self.cfg = network_config(pkg)
        self.states = [(m, None) for m in members(pkg)]
        self.device = _device(device)
        self.net = RetinaUNet(self.cfg).to(self.device).eval()
        self.anchors = anchors_tensor(self.cfg, self.device)
        self.pooling = wbc_pooling(pkg)
        ens = pkg.card.get("ensemble") or {}
        self.seg_mode = ens.get("segmentation_mode", "argmax_vote")
        self.min_confidence = float(ens.get("min_confidence", self.cfg["min_confidence"]))

    def predict(self, x: np.ndarray, tta: bool = False,
                progress: Optional[Callable[[float, str], None]] = None) -> EnsembleOutput:
        progress = progress or silent
        expected = (self.cfg["n_channels"], *self.cfg["patch_size"])
        if tuple(x.shape) != tuple(expected):
            raise ModelError(f"Model '{self.pkg.name}' expects input (C, Y, X, Z) = {expected}, got {tuple(x.shape)}.")
        flips = TTA_FLIPS if tta else ((),)
        batch = torch.stack([torch.flip(torch.from_numpy(x), [d - 1 for d in f]) if f else torch.from_numpy(x)
                             for f in flips]).to(self.device)
        amp = torch.autocast("cuda", dtype=torch.float16) if self.device.type == "cuda" else nullcontext()
        boxes: list[Box] = []
        seg_sum = torch.zeros(tuple(self.cfg["patch_size"]), dtype=torch.float32, device=self.device)
        timings = {"loading weights": 0.0, "network": 0.0, "decoding": 0.0, "wbc": 0.0}
        y, xx, _ = self.cfg["patch_size"]
        for i, (member, state) in enumerate(self.states):
            progress(i / len(self.states), f"ensemble member {i + 1}/{len(self.states)} "
                                           f"(fold {member.get('fold')}, epoch {member.get('epoch')})")
            tl = time.perf_counter()
            self.net.load_state_dict(state if state is not None else read_member(self.pkg, member))
            t0 = time.perf_counter()
            timings["loading weights"] += t0 - tl
            with torch.no_grad(), amp:
                cls, deltas, seg = self.net(batch)
            t1 = time.perf_counter()
            per_aug = refine_detections(cls.float(), deltas.float(), self.anchors, self.cfg,
                                        min_confidence=self.min_confidence)
            for a, (flip, found) in enumerate(zip(flips, per_aug)):
                mid = member_id(member, a, self.pooling)
                for b in found:
                    c = list(b.coords)
                    if 2 in flip:  # undo the y mirror: voxel i <-> Y - 1 - i
                        c[0], c[2] = y - 1 - c[2], y - 1 - c[0]
                    if 3 in flip:
                        c[1], c[3] = xx - 1 - c[3], xx - 1 - c[1]
                    boxes.append(Box(c, b.score, b.cls, mid, b.class_probs))
                s = seg[a].float()
                if flip:
                    s = torch.flip(s, [d - 1 for d in flip])
                if self.seg_mode == "softmax_mean":
                    seg_sum += torch.softmax(s, dim=0)[1:].sum(0)
                else:  # toolkit: argmax label map per model, then the mean over models
                    seg_sum += (torch.argmax(s, dim=0) > 0).float()
            timings["network"] += t1 - t0
            timings["decoding"] += time.perf_counter() - t1
        n_pred = len(self.states) * len(flips)
        t2 = time.perf_counter()
        merged = weighted_box_clustering(boxes, n_ens=n_pred, iou_threshold=float(self.cfg["wcs_iou"]))
        timings["wbc"] = time.perf_counter() - t2
        progress(1.0, f"{len(merged)} boxes after weighted box clustering of {len(boxes)}")
        return EnsembleOutput(merged, (seg_sum / n_pred).cpu().numpy().astype(np.float32), n_pred, timings)


def to_detection_case(out: EnsembleOutput, geometry, case_id: str, probability_map: Optional[Path] = None,
                      min_score: float = 0.0):
    """WBC clusters -> formats.DetectionCase (LPS mm; ggg = network class - 1)."""
    from ...formats import Detection, DetectionCase

    dets = []
    for box in sorted(out.boxes, key=lambda b: -b.score):
        if box.score < min_score:
            continue
        lo, hi = geometry.mdt_box_to_lps(box.coords)
        centre = (np.asarray(lo) + np.asarray(hi)) / 2.0
        class_scores = None
        if len(box.class_probs) >= 2:
            class_scores = {str(g): float(p) for g, p in enumerate(box.class_probs[1:])}
        dets.append(Detection(id=len(dets) + 1, ggg=int(box.cls) - 1, score=float(box.score),
                              center_lps=tuple(float(v) for v in centre),
                              box_lps=(tuple(float(v) for v in lo), tuple(float(v) for v in hi)),
                              class_scores=class_scores))
    return DetectionCase(case_id, dets, probability_map)


def regrid(prep, size: Sequence[int], spacing: Sequence[float]):
    """Re-sample a pre-processed case onto another crop grid (same centre and T2 frame), for
    models trained on a smaller crop than the paper's 160x160x24 at 0.5x0.5x3 mm."""
    from ...preprocessing.crop_geometry import CropGeometry, resample
    from ...preprocessing.preprocess import Preprocessed
    import SimpleITK as sitk

    g = prep.geometry
    size = tuple(int(s) for s in size)
    spacing = tuple(float(s) for s in spacing)
    if tuple(g.crop.size) == size and np.allclose(g.crop.spacing, spacing):
        return prep
    geom = CropGeometry.around(g.t2, g.center_lps, g.center_source, size, spacing)
    arrays = []
    for name in prep.channels:
        mode = "nearest" if name in MASK_CHANNELS else "linear"
        arrays.append(sitk.GetArrayFromImage(resample(prep.image(name), geom.crop, mode)).astype(np.float32))
    return Preprocessed(prep.case_id, np.stack(arrays), prep.channels, geom, dict(prep.sources),
                        dict(prep.normalisation), prep.normalise_over)
