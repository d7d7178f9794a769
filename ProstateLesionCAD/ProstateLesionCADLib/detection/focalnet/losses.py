"""FocalNet losses (Cao et al. 2019, Sec. II-C2 to II-C4).

- `focal_weight` (Eq. 2): q(p) = max_j [ y_j (1 - p_j)^2 + (1 - y_j) p_j^2 ], the largest squared
  margin between prediction and truth over the 5 ordinal channels, then a 3x3 max pooling "to
  maintain consistent weights for positive and negative pixels around lesion boundaries".
- `ordinal_focal_loss` (Eq. 1): q * sum_i [ -alpha y_i log p_i - (1 - alpha)(1 - y_i) log(1 - p_i) ],
  alpha = 0.75, averaged over pixels (the expectation of Eq. 4).
- `mutual_finding_loss` (Eq. 3): the same network run with ADC only and T2 only (the other
  channel blanked with zeros); L2 = || y * (f_out - f_i) ||^2 on the ground-truth mask, the
  smaller of the two per slice, divided by the number of pixels N. f_out is detached: MFL
  trains only the single-component passes ("MFL does not pass the gradient to f_out").
- `focalnet_loss` (Eq. 4): FL + lambda MFL with lambda = 1 / positive-bit ratio.

Logarithm convention: the losses use natural logarithms (the usual binary cross-entropy).
The paper's worked example (a non-lesion pixel predicted 0.95 non-lesion "contributes 0.022
to the standard cross-entropy loss while only 5.6e-5 to FL") uses base-10 logarithms and
leaves out the alpha weight: -log10(0.95) = 0.0223 and 0.05^2 * 0.0223 = 5.57e-5. With natural
logarithms the same pixel gives 0.0513 and 1.28e-4; the ratio, the focal weight 0.0025,
is the same (tested in Testing/test_focalnet.py).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

ALPHA = 0.75
POOL = 3


def focal_weight(prob: torch.Tensor, target: torch.Tensor, pool: int = POOL) -> torch.Tensor:
    """Eq. 2 for (B, C, H, W) probabilities and 0/1 targets -> (B, 1, H, W), max-pooled pool x pool."""
    margin = target * (1.0 - prob) ** 2 + (1.0 - target) * prob ** 2
    q = margin.amax(dim=1, keepdim=True)
    if pool > 1:
        q = F.max_pool2d(q, kernel_size=pool, stride=1, padding=pool // 2)
    return q


def ordinal_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = ALPHA, pool: int = POOL,
                       reduction: str = "mean") -> torch.Tensor:
    """Eq. 1 from logits (B, 5, H, W) and ordinal targets; reduction "mean" or "none" (B, 1, H, W)."""
    target = target.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # stable -log p / -log(1-p)
    weighted = (alpha * target + (1.0 - alpha) * (1.0 - target)) * bce
    loss = focal_weight(torch.sigmoid(logits), target, pool) * weighted.sum(dim=1, keepdim=True)
    return loss.mean() if reduction == "mean" else loss


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The CE baseline of Sec. III-D: plain binary cross-entropy on the ordinal bits, summed over
    channels and averaged over pixels (no focal weight, no alpha)."""
    bce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    return bce.sum(dim=1).mean()


def blank_channel(x: torch.Tensor, channel: int) -> torch.Tensor:
    """The input with one imaging component replaced by the all-zero blank image."""
    out = x.clone()
    out[:, channel] = 0.0
    return out


def mutual_finding_loss(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, target: torch.Tensor,
                        f_out: torch.Tensor, channels: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """Eq. 3 for a batch: x (B, 2, H, W) with the two imaging components at `channels`; f_out the
    full-input sigmoid output (B, 5, H, W) — detached here so no MFL gradient reaches it."""
    reference = f_out.detach()
    n_pixels = x.shape[-1] * x.shape[-2]
    distances = []
    for keep_only in channels:  # pass with only this component: blank every other one
        xi = x
        for other in channels:
            if other != keep_only:
                xi = blank_channel(xi, other)
        fi = torch.sigmoid(model(xi))
        distances.append(((target * (reference - fi)) ** 2).flatten(1).sum(dim=1))
    per_slice = torch.stack(distances, dim=1).amin(dim=1) / n_pixels
    return per_slice.mean()


def positive_bit_ratio(targets: torch.Tensor) -> float:
    """Share of 1-bits in ordinal targets (the paper reports 0.77 %); lambda is its inverse."""
    return float(targets.float().mean())


def focalnet_loss(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, target: torch.Tensor,
                  kind: str = "fl+mfl", lam: Optional[float] = None, alpha: float = ALPHA,
                  channels: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of one batch: "ce", "fl" or "fl+mfl" (Eq. 4, lam = 1 / positive-bit ratio)."""
    logits = model(x)
    if kind == "ce":
        loss = cross_entropy_loss(logits, target)
        return loss, {"ce": float(loss.detach())}
    fl = ordinal_focal_loss(logits, target, alpha=alpha)
    if kind == "fl":
        return fl, {"fl": float(fl.detach())}
    if kind != "fl+mfl":
        raise ValueError(f"loss must be ce, fl or fl+mfl, got {kind!r}")
    if lam is None:
        raise ValueError("fl+mfl needs lam = 1 / positive-bit ratio of the training set")
    mfl = mutual_finding_loss(model, x, target, torch.sigmoid(logits), channels)
    return fl + lam * mfl, {"fl": float(fl.detach()), "mfl": float(mfl.detach())}
