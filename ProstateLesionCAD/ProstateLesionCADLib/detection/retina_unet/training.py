"""Training the Retina U-Net with 5-fold cross-validation (main paper: "Hyperparameters",
"Online data augmentation", "Data partitioning", "Epoch and CV ensembling during testing").

Per fold: Adam with a triangular cyclic learning rate whose amplitude decays
exponentially (between `lr_min` 8e-5 and `lr_max` 3.5e-4), `batches_per_epoch` batches of
`batch_size` augmented crops per epoch (MONAI rotation/scaling, elastic deformation,
left-right mirroring, Random Channel Drop), validation mean average precision per class
after every epoch, and the best `save_n_models` epochs kept as ensemble members.
With `torchrun` (WORLD_SIZE > 1) every process trains the same fold data-parallel via
DistributedDataParallel (gloo on CPU, nccl on GPU); only rank 0 validates and saves.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ...errors import ParameterError
from ...progress import silent
from .anchors import anchors_tensor
from .box_coding import iou_matrix
from .channel_drop import random_channel_drop
from .decoding import refine_detections
from .losses import total_loss
from .network import RetinaUNet
from .targets import boxes_from_labels, match_anchors

PAPER_TRAINING = {"batch_size": 6, "batches_per_epoch": 120, "epochs": 115, "lr_min": 8e-5, "lr_max": 3.5e-4,
                  "lr_half_cycle_batches": 240, "lr_gamma": 0.99995, "weight_decay": 1e-5, "n_folds": 5,
                  "save_n_models": 5, "channel_drop_p": 0.075, "aug_affine_p": 0.8, "aug_rotate_deg": 15.0,
                  "aug_scale": 0.15, "aug_elastic_p": 0.3, "aug_mirror_p": 0.5, "seed": 0,
                  "val_min_confidence": 0.0}


@dataclass
class TrainingCase:
    """One case on the model's crop grid: image (C, Y, X, Z), lesion labels (Y, X, Z)."""

    case_id: str
    image: np.ndarray
    labels: np.ndarray
    lesion_ggg: dict[int, Optional[int]]  # lesion label -> GGG 0..3, None when unknown
    classify: bool = True  # False: no GGG known (train seg + boxes only, never validated)
    geometry: Any = None  # crop_geometry.CropGeometry, for LPS outputs
    gt_case: Any = None  # formats.GroundTruthCase, for lesion-level evaluation


@dataclass
class FoldResult:
    fold: int
    ranking: list[tuple[int, float]]  # (epoch, validation mAP), best first
    history: list[dict[str, float]] = field(default_factory=list)
    member_files: dict[int, Path] = field(default_factory=dict)


def training_settings(overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    s = copy.deepcopy(PAPER_TRAINING)
    s.update(overrides or {})
    for key in ("batch_size", "batches_per_epoch", "epochs", "n_folds", "save_n_models"):
        if int(s[key]) < 1:
            raise ParameterError(f"training setting {key} must be at least 1, got {s[key]}.")
    if not 0 <= float(s["channel_drop_p"]) <= 1:
        raise ParameterError(f"channel_drop_p must be in [0, 1], got {s['channel_drop_p']}.")
    return s


# ------------------------------------------------------------------ splits

def make_split(case_ids: Sequence[str], n_folds: int, seed: int, unlabeled: Sequence[str] = ()) -> dict[str, Any]:
    """Fixed k-fold split of the labelled cases; unlabeled cases train in every fold."""
    labelled = sorted(c for c in case_ids if c not in set(unlabeled))
    if len(labelled) < n_folds:
        raise ParameterError(f"{len(labelled)} labelled cases cannot be split into {n_folds} folds.")
    order = np.random.default_rng(seed).permutation(len(labelled))
    folds = [sorted(labelled[i] for i in order[f::n_folds]) for f in range(n_folds)]
    return {"format": "prostate-cad-split/1", "seed": seed, "folds": folds, "unlabeled": sorted(unlabeled)}


def read_or_make_split(path: Path, case_ids: Sequence[str], n_folds: int, seed: int,
                       unlabeled: Sequence[str] = ()) -> dict[str, Any]:
    from ...errors import FormatError
    if path.is_file():
        try:
            split = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise FormatError(f"{path}: not valid JSON ({exc.msg}).") from None
        if split.get("format") != "prostate-cad-split/1" or not isinstance(split.get("folds"), list):
            raise FormatError(f"{path}: not a prostate-cad-split/1 file.")
        unknown = sorted({c for f in split["folds"] for c in f} - set(case_ids))
        if unknown:
            raise FormatError(f"{path}: cases {unknown[:3]} are in the split but not in the training data.")
        return split
    split = make_split(case_ids, n_folds, seed, unlabeled)
    from ...output_files import atomic_file
    with atomic_file(path) as handle:
        json.dump(split, handle, indent=1)
    return split


# ------------------------------------------------------------------ augmentation

def make_augmenter(settings: dict[str, Any]):
    """MONAI dictionary transforms on {"image": (C,Y,X,Z), "label": (1,Y,X,Z)}."""
    from monai.transforms import Compose, Rand3DElasticd, RandAffined, RandFlipd

    rot = math.radians(float(settings["aug_rotate_deg"]))
    sc = float(settings["aug_scale"])
    return Compose([
        RandAffined(keys=("image", "label"), prob=float(settings["aug_affine_p"]), rotate_range=(0.0, 0.0, rot),
                    scale_range=(sc, sc, sc), mode=("bilinear", "nearest"), padding_mode="zeros"),
        Rand3DElasticd(keys=("image", "label"), prob=float(settings["aug_elastic_p"]), sigma_range=(5.0, 7.0),
                       magnitude_range=(20.0, 60.0), mode=("bilinear", "nearest"), padding_mode="zeros"),
        RandFlipd(keys=("image", "label"), prob=float(settings["aug_mirror_p"]), spatial_axis=1),  # x: left-right
    ])


def augment(case: TrainingCase, augmenter, channels: Sequence[str], settings: dict[str, Any],
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    sample = {"image": case.image.copy(), "label": case.labels[None].astype(np.float32)}
    out = augmenter(sample) if augmenter is not None else sample
    image = np.asarray(out["image"], dtype=np.float32).copy()
    labels = np.rint(np.asarray(out["label"])[0]).astype(np.int16)
    image, _ = random_channel_drop(image, channels, rng, float(settings["channel_drop_p"]))
    return image, labels


# ------------------------------------------------------------------ validation

def average_precision(dets: list[tuple[float, bool]], n_gt: int) -> Optional[float]:
    """All-point interpolated AP of (score, is_true_positive) detections; None without GT."""
    if n_gt == 0:
        return None
    if not dets:
        return 0.0
    dets = sorted(dets, key=lambda d: -d[0])
    tp = np.cumsum([d[1] for d in dets])
    fp = np.cumsum([not d[1] for d in dets])
    recall = tp / n_gt
    precision = tp / np.maximum(tp + fp, 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def predict_case(net: RetinaUNet, case: TrainingCase, anchors: torch.Tensor, cfg: dict[str, Any],
                 device: torch.device, min_confidence: float):
    net.eval()
    with torch.no_grad():
        cls, deltas, seg = net(torch.from_numpy(case.image)[None].to(device))
    boxes = refine_detections(cls, deltas, anchors, cfg, min_confidence=min_confidence)[0]
    return boxes, torch.softmax(seg.float(), 1)[0, 1].cpu().numpy()


def validation_map(net: RetinaUNet, cases: Sequence[TrainingCase], anchors: torch.Tensor, cfg: dict[str, Any],
                   device: torch.device, min_confidence: float, match_iou: float = 1e-5) -> dict[str, Optional[float]]:
    """AP per class (GGG0..GGG3+) over the validation cases and their mean (mAP)."""
    per_class: dict[int, list[tuple[float, bool]]] = {c: [] for c in range(1, cfg["head_classes"])}
    n_gt = {c: 0 for c in per_class}
    for case in cases:
        gt_boxes, gt_classes = boxes_from_labels(case.labels, case.lesion_ggg)
        boxes, _ = predict_case(net, case, anchors, cfg, device, min_confidence)
        for c in per_class:
            gts = gt_boxes[gt_classes == c]
            n_gt[c] += len(gts)
            used = np.zeros(len(gts), bool)
            for b in sorted((b for b in boxes if b.cls == c), key=lambda b: -b.score):
                hit = False
                if len(gts):
                    iou = iou_matrix(torch.tensor([b.coords], dtype=torch.float64), torch.as_tensor(gts))[0].numpy()
                    iou[used] = -1
                    j = int(np.argmax(iou))
                    if iou[j] > match_iou:
                        used[j] = hit = True
                per_class[c].append((b.score, hit))
    aps = {f"AP_GGG{c - 1}": average_precision(per_class[c], n_gt[c]) for c in per_class}
    valid = [v for v in aps.values() if v is not None]
    aps["mAP"] = float(np.mean(valid)) if valid else 0.0
    return aps


# ------------------------------------------------------------------ one fold

def make_optimizer(net: torch.nn.Module, settings: dict[str, Any]):
    """Adam + triangular cyclic LR between lr_min and lr_max whose amplitude decays by
    lr_gamma per batch ("exp_range"), stepped once per batch."""
    opt = torch.optim.Adam(net.parameters(), lr=float(settings["lr_min"]), weight_decay=float(settings["weight_decay"]))
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=float(settings["lr_min"]), max_lr=float(settings["lr_max"]),
                                              step_size_up=int(settings["lr_half_cycle_batches"]), mode="exp_range",
                                              gamma=float(settings["lr_gamma"]), cycle_momentum=False)
    return opt, sched


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class AugmentedCrops:
    """Training sample n of a fold (a torch map-style dataset): a case drawn at random,
    augmented, its anchor targets matched. All its randomness comes from (stream, n), so the
    batches are the same in the training process and in any number of worker processes."""

    def __init__(self, cases: Sequence[TrainingCase], cfg: dict[str, Any], channels: Sequence[str],
                 settings: dict[str, Any], anchors: torch.Tensor, stream: Sequence[int], length: int):
        # only what a worker needs: the geometry and ground truth stay in the training process
        self.cases = [TrainingCase(c.case_id, c.image, c.labels, c.lesion_ggg, c.classify) for c in cases]
        self.cfg, self.channels, self.settings = cfg, list(channels), settings
        self.anchors = anchors.cpu()
        self.stream, self.length = [int(s) for s in stream], length
        self.augmenter = make_augmenter(settings)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, n: int):
        from ...models.training_runs import sample_rng

        rng = sample_rng(self.stream, n)
        case = self.cases[int(rng.integers(len(self.cases)))]
        self.augmenter.set_random_state(seed=int(rng.integers(2 ** 31)))
        img, lab = augment(case, self.augmenter, self.channels, self.settings, rng)
        gt_boxes, gt_classes = boxes_from_labels(lab, case.lesion_ggg)
        match, gt_index = match_anchors(self.anchors, gt_boxes, gt_classes, self.cfg, rng)
        return img, lab > 0, {"match": match, "gt_index": gt_index, "gt_boxes": gt_boxes, "classify": case.classify}


def collate_crops(samples):
    images, segs, targets = zip(*samples)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(segs)), list(targets)


def _to_device(target: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in target.items()}


def train_fold(fold: int, train_cases: Sequence[TrainingCase], val_cases: Sequence[TrainingCase],
               cfg: dict[str, Any], channels: Sequence[str], settings: dict[str, Any], work_dir: Path,
               device: torch.device, progress: Optional[Callable[[float, str], None]] = None,
               workers: int = 0, epoch_done: Optional[Callable[[int], None]] = None) -> FoldResult:
    """Train one fold; rank 0 writes work_dir/fold_<f>/epoch_<e>.pt for the best epochs,
    fold_<f>/history.json after every epoch and fold_<f>/result.json at the end. A fold already
    finished there with the same network, settings, channels and cases is reused, not trained
    again (one fold per job, then package them all); an interrupted one continues from
    fold_<f>/checkpoint.pt (written after every epoch) to the weights an uninterrupted run gives.

    `workers` processes make the augmented batches (0: this process); the weights do not
    depend on it. `epoch_done(epoch)` is called after each epoch's checkpoint is written
    (an exception raised there stops the run as an interruption would)."""
    from monai.utils import set_determinism

    from ...models.training_runs import (cpu_state, load_checkpoint, restore_rng_state, rng_state, sample_loader,
                                         save_checkpoint, write_history)

    progress = progress or silent
    fold_dir = work_dir / f"fold_{fold}"
    key = _fold_key(fold, train_cases, val_cases, cfg, channels, settings)
    finished = _finished_fold(fold, fold_dir, key)
    if finished is not None:
        progress(1.0, f"fold {fold}: reusing the finished training in {fold_dir}")
        return finished
    rank, world = _dist()
    seed = int(settings["seed"]) + 1000 * fold
    torch.manual_seed(seed)  # same initial weights on every rank
    set_determinism(seed=seed + rank)
    rng = np.random.default_rng(seed + rank)  # the loss's negative sampling
    net = RetinaUNet(cfg).to(device)
    model = net
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    opt, sched = make_optimizer(net, settings)
    anchors = anchors_tensor(cfg, device)
    fold_dir.mkdir(parents=True, exist_ok=True)
    result = FoldResult(fold, [])
    epochs, per_epoch, bs = int(settings["epochs"]), int(settings["batches_per_epoch"]), int(settings["batch_size"])
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if amp else None
    checkpoint_file = fold_dir / "checkpoint.pt"
    run_key = f"{key}/{world}"
    state = _broadcast(load_checkpoint(checkpoint_file, run_key) if rank == 0 else None, world)
    if state is not None and all((fold_dir / f"epoch_{e}.pt").is_file() for e, _ in state["ranking"]):
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        restore_rng_state(rng, state["rng"][rank])
        result.ranking = [(int(e), float(v)) for e, v in state["ranking"]]
        result.member_files = {e: fold_dir / f"epoch_{e}.pt" for e, _ in result.ranking}
        result.history = list(state["history"])
        start_epoch, wall = int(state["epoch"]) + 1, float(state["wall_seconds"])
        progress(start_epoch / epochs, f"fold {fold}: resuming after epoch {start_epoch}/{epochs} from {checkpoint_file}")
    else:
        start_epoch, wall = 0, 0.0
    per_sample = per_epoch * bs
    data = AugmentedCrops(train_cases, cfg, channels, settings, anchors, (seed, rank), epochs * per_sample)
    batches = iter(sample_loader(data, start_epoch * per_sample, epochs * per_sample, bs, workers, seed + rank,
                                 collate_crops, device))
    for epoch in range(start_epoch, epochs):
        model.train()
        t0 = time.perf_counter()
        sums = {"loss": 0.0, "class": 0.0, "box": 0.0, "seg": 0.0}
        waited = 0.0
        for step in range(per_epoch):
            t_wait = time.perf_counter()
            x, seg_target, targets = next(batches)
            waited += time.perf_counter() - t_wait
            x = x.to(device, non_blocking=True)
            seg_target = seg_target.to(device, non_blocking=True)
            targets = [_to_device(t, device) for t in targets] if device.type != "cpu" else targets
            with torch.autocast("cuda", enabled=amp):
                outputs = model(x)
            loss, parts = total_loss(outputs, targets, anchors, cfg, seg_target, rng)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            sched.step()
            sums["loss"] += float(loss.detach())
            for k, v in parts.items():
                sums[k] += v
            progress((epoch + (step + 1) / per_epoch) / epochs,
                     f"fold {fold} epoch {epoch + 1}/{epochs} batch {step + 1}/{per_epoch} loss {float(loss.detach()):.3f}")
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch, **{k: v / per_epoch for k, v in sums.items()},
                  "lr": float(sched.get_last_lr()[0]), "seconds": seconds,
                  "samples_per_s": per_sample * world / seconds if seconds > 0 else None,
                  "data_wait_seconds": waited, "workers": workers}
        if rank == 0:
            aps = validation_map(net, val_cases, anchors, cfg, device, float(settings["val_min_confidence"]))
            record.update(aps)
            _keep_best(result, net, epoch, aps["mAP"], fold_dir, int(settings["save_n_models"]))
        wall += time.perf_counter() - t0
        record["wall_seconds"] = wall
        result.history.append(record)
        states = _gather(rng_state(rng), world)
        if rank == 0:
            write_history(fold_dir / "history.json", result.history)
            save_checkpoint(checkpoint_file, {
                "key": run_key, "epoch": epoch, "net": cpu_state(net), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": states, "ranking": result.ranking, "history": result.history, "wall_seconds": wall})
        if world > 1:
            torch.distributed.barrier()
        if epoch_done is not None:
            epoch_done(epoch)
    if rank == 0:
        plot_history(result.history, fold_dir / "training.png", f"fold {fold}")
        (fold_dir / "result.json").write_text(json.dumps({"key": key, "ranking": result.ranking}))
    return result


def _broadcast(obj: Any, world: int) -> Any:
    """Rank 0's object on every rank (the checkpoint every replica resumes from)."""
    if world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _gather(obj: Any, world: int) -> list[Any]:
    """Every rank's object, by rank (each replica's RNG state for the checkpoint)."""
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def _fold_key(fold: int, train_cases, val_cases, cfg, channels, settings) -> str:
    """What a fold's training depends on (cases by id, network, channels, settings)."""
    import hashlib

    what = {"fold": fold, "train": [c.case_id for c in train_cases], "val": [c.case_id for c in val_cases],
            "cfg": cfg, "channels": list(channels), "settings": settings}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def fold_started(fold: int, train_cases, val_cases, cfg, channels, settings, work_dir: Path) -> bool:
    """Whether work_dir holds this fold's finished training or a checkpoint to resume it from."""
    from ...models.training_runs import load_checkpoint

    fold_dir = work_dir / f"fold_{fold}"
    key = _fold_key(fold, train_cases, val_cases, cfg, channels, settings)
    return (_finished_fold(fold, fold_dir, key) is not None
            or load_checkpoint(fold_dir / "checkpoint.pt", f"{key}/{_dist()[1]}") is not None)


def _finished_fold(fold: int, fold_dir: Path, key: str) -> Optional[FoldResult]:
    try:
        done = json.loads((fold_dir / "result.json").read_text())
        history = json.loads((fold_dir / "history.json").read_text())
    except (OSError, ValueError):
        return None
    ranking = [(int(e), float(v)) for e, v in done.get("ranking", [])]
    files = {e: fold_dir / f"epoch_{e}.pt" for e, _ in ranking}
    if done.get("key") != key or not ranking or not all(f.is_file() for f in files.values()):
        return None
    return FoldResult(fold, ranking, history, files)


def _keep_best(result: FoldResult, net: RetinaUNet, epoch: int, score: float, fold_dir: Path, keep: int) -> None:
    """Keep the `keep` best epochs by validation mAP (ties: the later epoch wins)."""
    ranking = result.ranking + [(epoch, score)]
    ranking.sort(key=lambda r: (-r[1], -r[0]))
    if (epoch, score) in ranking[:keep]:
        path = fold_dir / f"epoch_{epoch}.pt"
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, path)
        result.member_files[epoch] = path
    for old, _ in ranking[keep:]:
        path = result.member_files.pop(old, None)
        if path is not None and path.exists():
            path.unlink()
    result.ranking = ranking[:keep]


def plot_history(history: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] + 1 for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key in ("loss", "class", "box", "seg"):
        a.plot(epochs, [h[key] for h in history], label=key)
    a.set_xlabel("epoch"), a.set_title(f"training loss ({title})"), a.legend()
    for key in ("mAP", "AP_GGG0", "AP_GGG1", "AP_GGG2", "AP_GGG3"):
        vals = [h.get(key) for h in history]
        if any(v is not None for v in vals):
            b.plot(epochs, [np.nan if v is None else v for v in vals], label=key)
    b.set_xlabel("epoch"), b.set_ylim(0, 1), b.set_title("validation AP"), b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
