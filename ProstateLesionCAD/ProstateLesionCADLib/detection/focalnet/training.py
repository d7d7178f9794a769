"""FocalNet training (Cao et al. 2019, Sec. II-C4 and II-D3).

Loss: "fl+mfl" (Eq. 4, lambda = 1 / positive-bit ratio of the training batches as sampled), "fl" or
"ce" (the loss study of Sec. III-D). Augmentation per batch, never for validation: T2
upper-threshold jitter in [-15 %, +20 %], random shift, scale and left-right flip, no
rotation. The paper optimises with SGD (momentum 0.9, L2 1e-4, lr 1e-3 x 0.7 every 2000
steps, 200 epochs, batch 16) on a GPU; `optimizer="sgd"` reproduces that schedule, the
CPU demo uses Adam (lr 1e-3, same L2 and decay rule scaled to its few hundred steps) so it
trains in minutes — a documented deviation.

Slices: the paper trains on annotated slices only; our phantoms and cases come with
prostate masks, so every slice crossing the prostate is used (lesion-free slices teach the
network where *not* to fire); `lesion_slice_share` oversamples the slices with lesions.
MFL warm-up: the paper starts from pre-trained weights, so its f_out is a meaningful "soft
truth" from the first step. From random weights f_out is flat at first, and MFL then pulls the
single-component outputs on lesions towards that flat reference (through the shared weights,
the full-input output too), which stalls training; MFL therefore joins after `mfl_warmup` of
the steps (FL alone before). Set it to 0 for the paper's schedule.
For CPU speed the network (fully convolutional) is trained on `patch` x `patch` crops of the
slices — around a lesion pixel on lesion slices, anywhere in the central region otherwise —
and applied to whole slices at inference.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import ModelError, ParameterError
from ...models.package import read_weights
from ...progress import ProgressCallback, silent
from .losses import ALPHA, focalnet_loss, positive_bit_ratio
from .network import FocalNet, FocalNetConfig
from .preprocessing import T2_UPPER_JITTER, SliceStack, normalise_adc

LOSSES = ("ce", "fl", "fl+mfl")
WEIGHTS_FILE = "focalnet.pt"


@dataclass
class TrainSettings:
    loss: str = "fl+mfl"
    steps: int = 600
    batch_size: int = 16
    optimizer: str = "adam"  # "sgd" = the paper's optimiser
    lr: float = 1e-3
    weight_decay: float = 1e-4
    decay_every: int = 2000  # lr x 0.7 every this many steps (paper)
    decay: float = 0.7
    alpha: float = ALPHA
    augment: bool = True
    max_shift: float = 0.1  # fraction of the image size
    scale_range: tuple[float, float] = (0.9, 1.1)
    lesion_slice_share: float = 0.5
    mfl_warmup: float = 0.25  # share of the steps trained with FL alone before MFL joins (see module docstring)
    patch: int = 32  # training patch size in pixels (0: whole slices); inference always uses whole slices
    seed: int = 0
    network: FocalNetConfig = field(default_factory=FocalNetConfig)

    def check(self) -> None:
        if self.loss not in LOSSES:
            raise ParameterError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}.")
        if self.optimizer not in ("adam", "sgd"):
            raise ParameterError(f"--optimizer must be adam or sgd, got {self.optimizer!r}.")
        if self.steps < 1 or self.batch_size < 1:
            raise ParameterError("--steps and --batch-size must be positive.")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["network"] = self.network.to_dict()
        d["scale_range"] = list(self.scale_range)
        return d


class SliceBank:
    """All training slices of all cases, kept raw so the T2 jitter can be drawn per sample."""

    def __init__(self, stacks: Sequence[SliceStack]):
        t2, adc, lower, upper, targets = [], [], [], [], []
        for s in stacks:
            idx = s.slices
            t2.append(s.t2[idx])
            adc.append(normalise_adc(s.adc[idx]))
            lower.append(np.full(idx.size, s.thresholds.lower, np.float32))
            upper.append(np.full(idx.size, s.thresholds.upper, np.float32))
            targets.append(s.targets())
        if not t2:
            raise ParameterError("No training slices: the training set is empty.")
        self.t2 = np.concatenate(t2).astype(np.float32)
        self.adc = np.concatenate(adc).astype(np.float32)
        self.lower = np.concatenate(lower)
        self.upper = np.concatenate(upper)
        self.targets = np.concatenate(targets)
        self.has_lesion = self.targets[:, 0].reshape(len(self.targets), -1).any(axis=1)

    def __len__(self) -> int:
        return len(self.t2)

    def positive_bit_ratio(self) -> float:
        return positive_bit_ratio(torch.from_numpy(self.targets))

    def sampled_positive_bit_ratio(self, rng: np.random.Generator, settings: "TrainSettings", batches: int = 64) -> float:
        """Positive-bit ratio of the batches as training draws them (lesion-slice share and
        patches raise it far above the whole-slice ratio); lambda = its inverse."""
        ones = total = 0.0
        for _ in range(batches):
            _, y = self.batch(self.sample(rng, settings.batch_size, settings.lesion_slice_share), rng, False, settings.patch)
            ones += float(y.sum())
            total += y.numel()
        return ones / total if total else 0.0

    def sample(self, rng: np.random.Generator, n: int, lesion_share: float) -> np.ndarray:
        pos, neg = np.flatnonzero(self.has_lesion), np.flatnonzero(~self.has_lesion)
        if pos.size == 0 or neg.size == 0:
            return rng.integers(0, len(self), size=n)
        n_pos = int(rng.binomial(n, lesion_share))
        return np.concatenate([rng.choice(pos, n_pos), rng.choice(neg, n - n_pos)])

    def batch(self, idx: np.ndarray, rng: np.random.Generator, jitter: bool,
              patch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        scale = rng.uniform(*T2_UPPER_JITTER, size=idx.size) if jitter else np.ones(idx.size)
        span = np.maximum(self.upper[idx] * scale - self.lower[idx], 1e-6)
        t2 = np.clip((self.t2[idx] - self.lower[idx, None, None]) / span[:, None, None], 0.0, 1.0)
        x = np.stack([t2, self.adc[idx]], axis=1).astype(np.float32)
        y = self.targets[idx].astype(np.float32)
        if patch and patch < x.shape[-1]:
            x, y = self._crop(x, y, rng, patch)
        return torch.from_numpy(x), torch.from_numpy(y)

    @staticmethod
    def _crop(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, patch: int) -> tuple[np.ndarray, np.ndarray]:
        size = x.shape[-1]
        xs = np.empty(x.shape[:2] + (patch, patch), x.dtype)
        ys = np.empty(y.shape[:2] + (patch, patch), y.dtype)
        for i in range(len(x)):
            lesion = np.argwhere(y[i, 0] > 0)
            if len(lesion):  # a lesion pixel somewhere inside the patch
                cy, cx = lesion[rng.integers(len(lesion))] + rng.integers(-patch // 3, patch // 3 + 1, size=2)
            else:  # the gland sits in the central region of the 80 mm square
                cy, cx = rng.integers(size // 4, size - size // 4 + 1, size=2)
            y0 = int(np.clip(cy - patch // 2, 0, size - patch))
            x0 = int(np.clip(cx - patch // 2, 0, size - patch))
            xs[i] = x[i, :, y0:y0 + patch, x0:x0 + patch]
            ys[i] = y[i, :, y0:y0 + patch, x0:x0 + patch]
        return xs, ys


def augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, max_shift: float,
            scale_range: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random shift, isotropic scale and left-right flip per sample (Sec. II-D3; no rotation)."""
    n = x.shape[0]
    scale = rng.uniform(*scale_range, size=n)
    flip = np.where(rng.uniform(size=n) < 0.5, -1.0, 1.0)
    shift = rng.uniform(-2 * max_shift, 2 * max_shift, size=(n, 2))  # normalised coordinates span 2
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, 0, 0] = flip / scale
    theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(torch.from_numpy(theta), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return x, y


def pick_device(choice: str = "auto") -> torch.device:
    from ...device import resolve_device
    return torch.device(resolve_device(choice).torch_name)


def train(stacks: Sequence[SliceStack], settings: TrainSettings = TrainSettings(), device: str = "auto",
          progress: Optional[ProgressCallback] = None) -> tuple[FocalNet, dict[str, Any]]:
    """Train one FocalNet on the slices of `stacks` (their `classes` must be set)."""
    settings.check()
    progress = progress or silent
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    dev = pick_device(device)
    bank = SliceBank(stacks)
    ratio = bank.sampled_positive_bit_ratio(np.random.default_rng(settings.seed + 1), settings)
    lam = 1.0 / ratio if ratio > 0 else 0.0
    model = FocalNet(settings.network).to(dev)
    if settings.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=settings.decay_every, gamma=settings.decay)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    model.train()
    for step in range(settings.steps):
        idx = bank.sample(rng, settings.batch_size, settings.lesion_slice_share)
        x, y = bank.batch(idx, rng, jitter=settings.augment, patch=settings.patch)
        if settings.augment:
            x, y = augment(x, y, rng, settings.max_shift, settings.scale_range)
        x, y = x.to(dev), y.to(dev)
        kind = settings.loss
        if kind == "fl+mfl" and step < settings.mfl_warmup * settings.steps:
            kind = "fl"
        loss, parts = focalnet_loss(model, x, y, kind=kind, lam=lam, alpha=settings.alpha)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if not np.isfinite(float(loss.detach())):
            raise FloatingPointError(f"FocalNet training diverged at step {step} (loss {float(loss.detach())}).")
        if step % 20 == 0 or step == settings.steps - 1:
            history.append({"step": step, "loss": float(loss.detach()), **parts})
            progress((step + 1) / settings.steps, f"step {step + 1}/{settings.steps} loss {float(loss.detach()):.4f}")
    model.eval()
    info = {"slices": len(bank), "lesion_slices": int(bank.has_lesion.sum()), "positive_bit_ratio": ratio,
            "lambda": lam, "seconds": round(time.perf_counter() - t0, 1), "history": history,
            "settings": settings.to_dict(), "device": str(dev)}
    return model.cpu(), info


def save_weights(model: FocalNet, path: Path) -> None:
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()}, path)


def load_weights(path: Path, device: str = "cpu") -> FocalNet:
    """A FocalNet from weights written by `save_weights` (tensors only; give a package's file
    through `ModelPackage.file`, which checks it is listed and verified); ModelError when unusable."""
    data = read_weights(path, map_location=device)
    try:
        model = FocalNet(FocalNetConfig.from_dict(data["config"]))
        model.load_state_dict(data["state_dict"])
    except Exception as exc:  # a missing key, a bad config or other shapes all mean the same to a user
        raise ModelError(f"Weight file {path} cannot be loaded ({type(exc).__name__}); it holds no FocalNet "
                         "config and weights that fit together.") from None
    return model.eval()
