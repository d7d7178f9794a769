"""U-Net with dense and residual blocks, the architecture of both CNNs of the zonal cascade.

Main paper, methods "Automated prostate zonal segmentation": both networks are U-Nets
whose blocks are dense (each convolution sees the concatenation of all earlier feature
maps of the block) and residual (the block output adds a projection of its input).

Why 2.5D and not 3D: prostate T2 is acquired with 3–3.6 mm slices and 0.5–0.6 mm
in-plane pixels, so a 3×3×3 kernel mixes tissue 6× farther apart in z than in-plane and
most of the useful context is in the slice. We feed each axial slice with its two
neighbours as channels (2.5D): the z-context the thick slices offer is kept, in-plane
detail stays at full resolution, no interpolation across slices is needed, and the
network is small and fast enough to train in minutes and run in about a second per
case on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn


class DenseResidualBlock(nn.Module):
    """`layers` conv-BN-ReLU units, each fed with the concatenation of all previous outputs
    (dense); a 1×1 transition to `out_ch` plus a 1×1 projection of the input (residual)."""

    def __init__(self, in_ch: int, out_ch: int, growth: int, layers: int = 2):
        super().__init__()
        self.units = nn.ModuleList()
        ch = in_ch
        for _ in range(layers):
            self.units.append(nn.Sequential(nn.Conv2d(ch, growth, 3, padding=1, bias=False),
                                            nn.BatchNorm2d(growth), nn.ReLU(inplace=True)))
            ch += growth
        self.transition = nn.Sequential(nn.Conv2d(ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for unit in self.units:
            features.append(unit(torch.cat(features, dim=1)))
        return self.act(self.transition(torch.cat(features, dim=1)) + self.skip(x))


class DenseResidualUNet(nn.Module):
    """2D U-Net on 2.5D inputs: `in_channels` = slices × inputs (3 T2 slices for CNN-1,
    3 T2 + 3 prostate-mask slices for CNN-2); one output logit map (the centre slice)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64, 96),
                 layers_per_block: int = 2):
        super().__init__()
        self.widths = tuple(widths)
        self.encoders = nn.ModuleList()
        ch = in_channels
        for w in widths:
            self.encoders.append(DenseResidualBlock(ch, w, max(w // 2, 8), layers_per_block))
            ch = w
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for w_skip in reversed(widths[:-1]):
            self.ups.append(nn.ConvTranspose2d(ch, w_skip, 2, stride=2))
            self.decoders.append(DenseResidualBlock(2 * w_skip, w_skip, max(w_skip // 2, 8), layers_per_block))
            ch = w_skip
        self.head = nn.Conv2d(ch, out_channels, 1)

    @property
    def divisor(self) -> int:
        """Input height/width must be a multiple of this (one halving per level)."""
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x)
            if i < len(self.encoders) - 1:
                skips.append(x)
                x = self.pool(x)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
