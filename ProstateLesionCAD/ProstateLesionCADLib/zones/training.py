"""Training of the zonal cascade (`prostate-cad train zones`).

Main paper, methods "Automated prostate zonal segmentation": CNN-1 learns the prostate
from T2, CNN-2 the central gland from T2 + the prostate mask; PZ = prostate − CG. Here
both are trained in one loop on 2.5D slices of the given volumes:

- inputs: T2 images and label maps (1 = CG, 2 = PZ) as NRRD/NIfTI/MHA pairs on the same grid;
- augmentation with MONAI transforms (left-right flip, small in-plane rotation/zoom,
  intensity scale/shift, gamma, noise); CNN-2 sees the true prostate mask randomly
  grown or shrunk by one pixel so it tolerates CNN-1's (or TAPS's) boundary errors;
- loss: binary cross-entropy + soft Dice per network;
- validation: the whole cascade on held-out volumes, Dice per structure (prostate,
  CG, PZ) on the T2 grid; the best validation state is kept and written as a model
  package (model.json + cnn1.pt + cnn2.pt, ARCHITECTURE.md).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..image_files import read_image_file, same_grid
from ..errors import CaseError, ParameterError
from ..orientation import to_canonical
from ..progress import ProgressCallback, silent

from .cascade import (ARCHITECTURE, DEFAULT_SPACING_XY, SLICES, CascadeNets, build_net, normalise, resample,
                      run_cascade, stack_slices, working_grid)
from .postprocess import CG_LABEL, PZ_LABEL, dice


@dataclass
class TrainingCase:
    name: str
    t2: sitk.Image  # original grid (validation runs the real pipeline on it)
    zones: np.ndarray  # original grid, z, y, x
    image: np.ndarray  # working grid, normalised
    prostate: np.ndarray  # working grid, float 0/1
    cg: np.ndarray


def read_pair(image_path: str | os.PathLike, label_path: str | os.PathLike) -> tuple[sitk.Image, sitk.Image]:
    """Read one T2 + zone label map; both must be 3D and share a grid."""
    image = read_image_file(image_path, "training T2 image")
    label = read_image_file(label_path, "training zone map image")  # float32: foreign values stay visible
    if not same_grid(image, label, direction_tol=1e-4):  # the trainer's own, stricter direction check
        raise CaseError(f"Label map {label_path} is not on the grid of image {image_path} "
                        "(size, spacing, origin or direction differ).")
    values = set(np.unique(sitk.GetArrayViewFromImage(label)).tolist())
    if not values <= {0, CG_LABEL, PZ_LABEL} or not values & {CG_LABEL, PZ_LABEL}:
        raise CaseError(f"Label map {label_path} must hold 1 = CG and 2 = PZ (found values {', '.join(f'{v:g}' for v in sorted(values))}).")
    return image, sitk.Cast(label, sitk.sitkUInt8)


def prepare_case(name: str, t2: sitk.Image, zones: sitk.Image, spacing_xy: float) -> TrainingCase:
    t2, zones = to_canonical(t2), to_canonical(zones)  # the voxel order the cascade sees at inference
    grid = working_grid(t2, spacing_xy)
    image = normalise(sitk.GetArrayFromImage(resample(t2, grid)))
    z = sitk.GetArrayFromImage(zones)
    masks = []
    for sel in (z > 0, z == CG_LABEL):
        m = sitk.GetImageFromArray(sel.astype(np.float32))
        m.CopyInformation(t2)
        masks.append((sitk.GetArrayFromImage(resample(m, grid)) > 0.5).astype(np.float32))
    return TrainingCase(name, t2, z, image, masks[0], masks[1])


def _augmenter():
    """MONAI dictionary transforms on one 2.5D sample (channels first, 2D); each sample seeds them."""
    from monai.transforms import (Compose, RandAdjustContrastd, RandAffined, RandFlipd, RandGaussianNoised,
                                  RandScaleIntensityd, RandShiftIntensityd)

    return Compose([
        RandFlipd(keys=["image", "prostate", "target"], prob=0.5, spatial_axis=1),  # left-right
        RandAffined(keys=["image", "prostate", "target"], prob=0.7, rotate_range=(np.deg2rad(12),),
                    scale_range=(0.12, 0.12), translate_range=(6, 6),
                    mode=("bilinear", "nearest", "nearest"), padding_mode="zeros"),
        RandScaleIntensityd(keys="image", factors=0.15, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        RandAdjustContrastd(keys="image", gamma=(0.7, 1.5), prob=0.3),
        RandGaussianNoised(keys="image", std=0.05, prob=0.3),
    ])


class SliceSamples:
    """Training sample n (a torch map-style dataset): a 2.5D patch of a random case and slice,
    augmented, for both networks. Its randomness comes from (seed, n) alone, so the batches are
    the same in the training process and in any number of DataLoader worker processes."""

    def __init__(self, cases: Sequence[TrainingCase], patch: int, seed: int, length: int):
        # the working-grid arrays only: a worker needs neither the T2 image nor the original zones
        self.slices = [(stack_slices(c.image), stack_slices(c.prostate), c.prostate, c.cg) for c in cases]
        self.patch, self.seed, self.length = patch, seed, length
        self.aug = _augmenter()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, n: int):
        from scipy import ndimage

        from ..models.training_runs import sample_rng

        rng = sample_rng([self.seed], n)
        patch = self.patch
        images, prostates, prostate, cg = self.slices[int(rng.integers(len(self.slices)))]
        has = np.flatnonzero(prostate.reshape(prostate.shape[0], -1).any(axis=1))
        z = int(rng.choice(has)) if has.size and rng.random() < 0.85 else int(rng.integers(images.shape[0]))
        img, pro = images[z], prostates[z]
        tgt = np.stack([prostate[z], cg[z]])
        # Random patch, centred near the gland most of the time.
        h, w = img.shape[1:]
        ph, pw = min(patch, h), min(patch, w)
        if prostate[z].any():
            cy, cx = np.argwhere(prostate[z]).mean(axis=0)
        else:
            cy, cx = h / 2, w / 2
        y0 = int(np.clip(cy - ph / 2 + rng.normal(0, patch / 6), 0, h - ph))
        x0 = int(np.clip(cx - pw / 2 + rng.normal(0, patch / 6), 0, w - pw))
        sl = (slice(None), slice(y0, y0 + ph), slice(x0, x0 + pw))
        self.aug.set_random_state(seed=int(rng.integers(2 ** 31)))
        d = self.aug({"image": img[sl].copy(), "prostate": pro[sl].copy(), "target": tgt[sl].copy()})
        img_a, pro_a, tgt_a = (np.asarray(d[k], dtype=np.float32) for k in ("image", "prostate", "target"))
        # CNN-2 must cope with an imperfect gland: grow or shrink it by a pixel half of the time.
        r = rng.random()
        if r < 0.25:
            pro_a = ndimage.binary_dilation(pro_a > 0.5, structure=np.ones((1, 3, 3), bool)).astype(np.float32)
        elif r < 0.5:
            pro_a = ndimage.binary_erosion(pro_a > 0.5, structure=np.ones((1, 3, 3), bool)).astype(np.float32)
        pad = [(0, 0), (0, patch - img_a.shape[1]), (0, patch - img_a.shape[2])]
        img_a, pro_a, tgt_a = (np.pad(a, pad) for a in (img_a, pro_a, tgt_a))
        return img_a, np.concatenate([img_a, pro_a]), tgt_a[:1], tgt_a[1:]


def _collate(samples):
    import torch

    return [torch.from_numpy(np.stack(v).astype(np.float32)) for v in zip(*samples)]


def _loss(logits, target):
    import torch
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    soft_dice = 1 - (2 * inter + 1) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    return bce + soft_dice.mean()


def _run_key(cases: Sequence[TrainingCase], arch: dict, settings: dict) -> str:
    """What a training run depends on: the prepared images and masks, the network and the settings."""
    import hashlib

    digest = hashlib.sha256(json.dumps({"arch": arch, "settings": settings}, sort_keys=True).encode())
    for case in cases:
        digest.update(case.name.encode())
        for array in (case.image, case.prostate, case.cg):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def validate(nets: CascadeNets, cases: Sequence[TrainingCase]) -> dict[str, float]:
    """Mean Dice per structure of the whole cascade on the T2 grid of each case."""
    scores = {"prostate": [], "cg": [], "pz": []}
    for case in cases:
        out = run_cascade(nets, case.t2)
        scores["prostate"].append(dice(out.prostate, case.zones > 0))
        scores["cg"].append(dice(out.zones == CG_LABEL, case.zones == CG_LABEL))
        scores["pz"].append(dice(out.zones == PZ_LABEL, case.zones == PZ_LABEL))
    return {k: float(np.mean(v)) for k, v in scores.items()}


@dataclass
class TrainingResult:
    package_dir: Path
    validation_dice: dict[str, float]
    best_step: int
    steps: int
    seconds: float


def train_zones(images: Sequence[str | os.PathLike], labels: Sequence[str | os.PathLike], out: str | os.PathLike,
                *, steps: int = 600, batch: int = 8, patch: int = 64, lr: float = 3e-3, val_fraction: float = 0.2,
                val_every: int = 100, widths: tuple[int, ...] = (12, 24, 48), spacing_xy: float = DEFAULT_SPACING_XY,
                seed: int = 0, name: str = "zones-cascade", version: str = "1.0", intended_use: Optional[str] = None,
                training_data: str = "", threads: Optional[int] = None,
                progress: Optional[ProgressCallback] = None, workers: int | str = 0, resume: bool = False,
                epoch_done: Optional[Callable[[int], None]] = None) -> TrainingResult:
    """Train CNN-1 and CNN-2 and write the best validation state as a model package in `out`.

    An epoch is `val_every` steps followed by a validation. After each, the work folder
    `.<out>.training` beside `out` gets `history.json` (losses, samples/s, wall time, learning
    rate, validation Dice per epoch) and `checkpoint.pt`; a later call with the same data and
    settings continues from there to the weights an uninterrupted run gives (`resume=True`
    refuses to start without such a checkpoint). The package holds the final history.json.
    `workers` ("auto" or a count) processes make the augmented batches (0: this process); the
    weights do not depend on it. `epoch_done(epoch)` runs after each epoch's checkpoint is
    written (an exception raised there stops the run as an interruption would)."""
    import shutil

    import torch

    from ..models.package import write_model_card
    from ..models.training_runs import (cpu_state, load_checkpoint, resolve_workers, sample_loader, save_checkpoint,
                                        write_history)
    from ..output_files import staged_output_dir

    progress = progress or silent
    if len(images) != len(labels):
        raise ParameterError(f"--images has {len(images)} files but --labels has {len(labels)}; give one label map per image.")
    if len(images) < 2:
        raise ParameterError("train zones needs at least 2 image/label pairs (one is held out for validation).")
    if steps < 1 or batch < 1 or patch < 16:
        raise ParameterError(f"steps, batch and patch must be positive (patch ≥ 16); got {steps}, {batch}, {patch}.")
    if val_every < 1:
        raise ParameterError(f"--val-every must be at least 1, got {val_every}.")
    workers = resolve_workers(workers)
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    cases = []
    for i, (im, lb) in enumerate(zip(images, labels)):
        progress(0.05 * i / len(images), f"reading {Path(im).name}")
        t2, zones = read_pair(im, lb)
        cases.append(prepare_case(Path(im).name, t2, zones, spacing_xy))
    order = rng.permutation(len(cases))
    n_val = max(1, int(round(val_fraction * len(cases))))
    val = [cases[i] for i in order[:n_val]]
    train = [cases[i] for i in order[n_val:]]

    arch = {"name": ARCHITECTURE, "widths": list(widths), "layers_per_block": 2, "slices": SLICES,
            "spacing_xy": spacing_xy, "cnn1_weights": "cnn1.pt", "cnn2_weights": "cnn2.pt",
            "cnn1_inputs": ["T2 (3 slices)"], "cnn2_inputs": ["T2 (3 slices)", "prostate mask (3 slices)"]}
    cnn1 = build_net(SLICES, arch).to(device)
    cnn2 = build_net(2 * SLICES, arch).to(device)
    params = list(cnn1.parameters()) + list(cnn2.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    nets = CascadeNets(cnn1, cnn2, spacing_xy, device=device)
    out = Path(out)
    work = out.parent / f".{out.name}.training"
    key = _run_key(cases, arch, {"steps": steps, "batch": batch, "patch": patch, "lr": lr, "val_fraction": val_fraction,
                                 "val_every": val_every, "seed": seed})
    state = load_checkpoint(work / "checkpoint.pt", key)
    if resume and state is None:
        raise ParameterError(f"--resume: {work} holds no interrupted training of these images, labels and settings "
                             "to continue.")
    best = (-1.0, None, None, 0, None)
    history: list[dict] = []
    first, wall = 1, 0.0
    if state is not None:
        cnn1.load_state_dict(state["cnn1"])
        cnn2.load_state_dict(state["cnn2"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        b = state["best"]
        best = (b["score"], b["cnn1"], b["cnn2"], b["step"], b["dice"])
        history, first, wall = list(state["history"]), int(state["step"]) + 1, float(state["wall_seconds"])
        progress(0.05 + 0.9 * (first - 1) / steps, f"resuming after step {first - 1}/{steps} from {work / 'checkpoint.pt'}")
    data = SliceSamples(train, patch, seed, steps * batch)
    batches = iter(sample_loader(data, (first - 1) * batch, steps * batch, batch, workers, seed, _collate, device))
    start = time.perf_counter() - wall
    epoch_start, losses, waited = time.perf_counter(), [], 0.0
    for step in range(first, steps + 1):
        cnn1.train()
        cnn2.train()
        t_wait = time.perf_counter()
        x1, x2, y1, y2 = (a.to(device, non_blocking=True) for a in next(batches))
        waited += time.perf_counter() - t_wait
        loss = _loss(cnn1(x1), y1) + _loss(cnn2(x2), y2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % val_every == 0 or step == steps:
            train_seconds = time.perf_counter() - epoch_start
            cnn1.eval()
            cnn2.eval()
            scores = validate(nets, val)
            mean = float(np.mean(list(scores.values())))
            if mean > best[0]:
                best = (mean, cpu_state(cnn1), cpu_state(cnn2), step, scores)
            progress(0.05 + 0.9 * step / steps,
                     f"step {step}/{steps} loss {losses[-1]:.3f} val Dice prostate {scores['prostate']:.3f} "
                     f"CG {scores['cg']:.3f} PZ {scores['pz']:.3f}")
            history.append({"epoch": len(history), "step": step, "loss": float(np.mean(losses)),
                            "lr": float(sched.get_last_lr()[0]), "seconds": train_seconds,
                            "samples_per_s": len(losses) * batch / train_seconds if train_seconds > 0 else None,
                            "data_wait_seconds": waited, "workers": workers,
                            "wall_seconds": time.perf_counter() - start,
                            **{f"dice_{k}": v for k, v in scores.items()}})
            write_history(work / "history.json", history)
            save_checkpoint(work / "checkpoint.pt", {
                "key": key, "step": step, "cnn1": cpu_state(cnn1), "cnn2": cpu_state(cnn2),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
                "best": {"score": best[0], "cnn1": best[1], "cnn2": best[2], "step": best[3], "dice": best[4]},
                "history": history, "wall_seconds": time.perf_counter() - start})
            if epoch_done is not None:
                epoch_done(len(history) - 1)
            epoch_start, losses, waited = time.perf_counter(), [], 0.0
        elif step % 10 == 0:
            progress(0.05 + 0.9 * step / steps, f"step {step}/{steps} loss {losses[-1]:.3f}")
    seconds = time.perf_counter() - start
    _, state1, state2, best_step, best_scores = best
    card = {
        "name": name, "version": version, "task": "zones", "architecture": arch,
        "channels": ["T2"], "spacing": [spacing_xy, spacing_xy, None],
        "class_names": {"1": "central gland", "2": "peripheral zone"},
        "training": {"steps": steps, "best_step": best_step, "batch": batch, "patch": patch, "lr": lr,
                     "cases_train": len(train), "cases_validation": len(val), "seconds": round(seconds, 1),
                     "validation_dice": {k: round(v, 4) for k, v in best_scores.items()}},
        "training_data": training_data or f"{len(cases)} user-supplied T2 volumes with CG/PZ label maps",
        "intended_use": intended_use or "Research use: prostate, central gland and peripheral zone masks as "
                                        "inputs to lesion detection; review and correct before use.",
        "licence": "Apache-2.0",
    }
    with staged_output_dir(out) as stage:
        torch.save(state1, stage / "cnn1.pt")
        torch.save(state2, stage / "cnn2.pt")
        write_model_card(stage, card, ["cnn1.pt", "cnn2.pt"])
        shutil.copyfile(work / "history.json", stage / "history.json")
    shutil.rmtree(work, ignore_errors=True)
    progress(1.0, f"model package written to {out} (best step {best_step})")
    return TrainingResult(Path(out), best_scores, best_step, steps, seconds)

