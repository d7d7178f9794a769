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
from .ensemble import StackedMembers, member_id, members, network_config, read_member, wbc_pooling
from .inference_network import InferenceNetwork, MemberOutput, usable_anchors
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


def decode_member(class_logits: torch.Tensor, bbox_deltas: torch.Tensor, anchors: torch.Tensor,
                  cfg: dict[str, Any], min_confidence: float, usable: Optional[torch.Tensor] = None) -> list[list[Box]]:
    """`refine_detections` restricted to the anchors where some foreground class reaches
    `min_confidence`: the same boxes, faster. The other anchors only ever give boxes below
    the threshold, which `refine_detections` drops at the end; on the way they rank below
    every box that survives, so neither the top-k, the NMS (a box only suppresses boxes
    of lower score) nor the 30-best cut of the surviving boxes changes without them.

    `usable` (from `inference_network.usable_anchors`) says `bbox_deltas` holds those
    anchors' deltas only."""
    if usable is None:
        usable = usable_anchors(class_logits, min_confidence)
        bbox_deltas = bbox_deltas[:, usable]
    if usable.numel() == 0:
        return [[] for _ in range(class_logits.shape[0])]
    return refine_detections(class_logits[:, usable], bbox_deltas, anchors[usable], cfg,
                             min_confidence=min_confidence)


def lesion_map(seg: torch.Tensor, is_margin: bool, seg_mode: str) -> torch.Tensor:
    """One member's lesion map (Y, X, Z) from its seg logits (classes, Y, X, Z) or its
    margin l1 - l0: the argmax label map (the toolkit's vote), or with "softmax_mean" the
    probability of any lesion class (for two classes, the sigmoid of the margin)."""
    if is_margin:
        return torch.sigmoid(seg) if seg_mode == "softmax_mean" else (seg > 0).float()
    if seg_mode == "softmax_mean":
        return torch.softmax(seg, dim=0)[1:].sum(0)
    return (torch.argmax(seg, dim=0) > 0).float()


def cpu_threads_for_torch() -> None:
    """Never more torch threads than the cores this process may use (a container's CPU
    quota or affinity can be far below the machine's core count, which torch counts)."""
    from ...device import usable_cores

    if torch.get_num_threads() > usable_cores():
        torch.set_num_threads(usable_cores())


# members per batched forward call on CUDA (StackedMembers); activations of five paper-size
# members at float16 need about 2 GB
CUDA_MEMBERS_PER_BATCH = 5


class RetinaUNetDetector:
    """All members of a detector package, ready to predict on (C, Y, X, Z) arrays.

    Members are read from disk one at a time during `predict`, the next one while the
    current one runs (25 published checkpoints would take about 0.6 GB at once); `states`
    may also hold state_dicts directly. `members_per_batch` > 1 runs that many members in
    one batched call (`ensemble.StackedMembers`); None: batches of CUDA_MEMBERS_PER_BATCH
    on CUDA, one member at a time on the CPU (faster there).
    """

    members_per_batch: Optional[int] = None
    cuda_autocast: Optional[torch.dtype] = torch.float16  # None: float32 on CUDA too

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
        if self.device.type == "cpu":
            cpu_threads_for_torch()

    @classmethod
    def from_states(cls, name: str, cfg: dict[str, Any], states: list[tuple[dict[str, Any], dict]],
                    device: str = "auto", pooling: str = "mdt", seg_mode: str = "argmax_vote",
                    min_confidence: Optional[float] = None) -> "RetinaUNetDetector":
        """An ensemble held in memory (no package on disk): (member card, state_dict) pairs."""
        det = cls.__new__(cls)
        det.pkg = ModelPackage(Path(name), {"name": name})
        det.cfg, det.states = cfg, list(states)
        det.device = _device(device)
        det.net = RetinaUNet(cfg).to(det.device).eval()
        det.anchors = anchors_tensor(cfg, det.device)
        det.pooling, det.seg_mode = pooling, seg_mode
        det.min_confidence = float(cfg["min_confidence"] if min_confidence is None else min_confidence)
        if det.device.type == "cpu":
            cpu_threads_for_torch()
        return det

    def batch_size(self) -> int:
        if self.members_per_batch:
            return max(1, int(self.members_per_batch))
        return CUDA_MEMBERS_PER_BATCH if self.device.type == "cuda" else 1

    def _read(self, chunk: list[tuple[dict[str, Any], Optional[dict]]]) -> list[dict]:
        return [state if state is not None else read_member(self.pkg, member) for member, state in chunk]

    def forward_members(self, states: list[dict], batch: torch.Tensor,
                        stacked: Optional["StackedMembers"] = None) -> list[MemberOutput]:
        """Each member's outputs on `batch`: one after the other (`InferenceNetwork`: folded
        BatchNorm, the seg margin, box deltas where the decoding reads them), or in one call
        through `stacked` (the full network's outputs)."""
        amp = (torch.autocast("cuda", dtype=self.cuda_autocast) if self.device.type == "cuda" and self.cuda_autocast
               else nullcontext())
        if stacked is None:
            outs = []
            for state in states:
                self.net.load_state_dict(state)
                with torch.inference_mode(), amp:
                    outs.append(InferenceNetwork(self.net)(batch, self.min_confidence))
            return outs
        with torch.inference_mode(), amp:
            cls, deltas, seg = stacked(stacked.stack(states, self.device), batch)
            outs = []
            for k in range(len(states)):
                usable = usable_anchors(cls[k], self.min_confidence)
                outs.append(MemberOutput(cls[k], usable, deltas[k][:, usable], seg[k], False))
        return outs

    def predict(self, x: np.ndarray, tta: bool = False,
                progress: Optional[Callable[[float, str], None]] = None) -> EnsembleOutput:
        from concurrent.futures import ThreadPoolExecutor

        progress = progress or silent
        expected = (self.cfg["n_channels"], *self.cfg["patch_size"])
        if tuple(x.shape) != tuple(expected):
            raise ModelError(f"Model '{self.pkg.name}' expects input (C, Y, X, Z) = {expected}, got {tuple(x.shape)}.")
        flips = TTA_FLIPS if tta else ((),)
        batch = torch.stack([torch.flip(torch.from_numpy(x), [d - 1 for d in f]) if f else torch.from_numpy(x)
                             for f in flips]).to(self.device)
        boxes: list[Box] = []
        seg_sum = torch.zeros(tuple(self.cfg["patch_size"]), dtype=torch.float32, device=self.device)
        timings = {"loading weights": 0.0, "network": 0.0, "decoding": 0.0, "wbc": 0.0}
        y, xx, _ = self.cfg["patch_size"]
        size = self.batch_size()
        chunks = [self.states[i:i + size] for i in range(0, len(self.states), size)]
        stacked = StackedMembers(self.net) if size > 1 else None
        with ThreadPoolExecutor(max_workers=1) as reader:  # reads the next members while these run
            pending = reader.submit(self._read, chunks[0])
            for c, chunk in enumerate(chunks):
                member = chunk[0][0]
                progress(c * size / len(self.states), f"ensemble member {c * size + 1}/{len(self.states)} "
                                                      f"(fold {member.get('fold')}, epoch {member.get('epoch')})")
                tl = time.perf_counter()
                states = pending.result()
                if c + 1 < len(chunks):
                    pending = reader.submit(self._read, chunks[c + 1])
                t0 = time.perf_counter()
                timings["loading weights"] += t0 - tl
                outs = self.forward_members(states, batch, stacked)
                t1 = time.perf_counter()
                timings["network"] += t1 - t0
                with torch.inference_mode():
                    for (member, _), out in zip(chunk, outs):
                        per_aug = decode_member(out.class_logits.float(), out.deltas.float(), self.anchors, self.cfg,
                                                self.min_confidence, usable=out.usable)
                        for a, (flip, found) in enumerate(zip(flips, per_aug)):
                            mid = member_id(member, a, self.pooling)
                            for b in found:
                                co = list(b.coords)
                                if 2 in flip:  # undo the y mirror: voxel i <-> Y - 1 - i
                                    co[0], co[2] = y - 1 - co[2], y - 1 - co[0]
                                if 3 in flip:
                                    co[1], co[3] = xx - 1 - co[3], xx - 1 - co[1]
                                boxes.append(Box(co, b.score, b.cls, mid, b.class_probs))
                            lesion = lesion_map(out.seg[a].float(), out.seg_is_margin, self.seg_mode)
                            seg_sum += torch.flip(lesion, [d - 2 for d in flip]) if flip else lesion
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
