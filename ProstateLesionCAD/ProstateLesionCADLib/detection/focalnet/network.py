"""FocalNet's backbone: a DeepLab-style 2D CNN with a residual encoder (Cao et al. 2019,
Sec. II-D3: "Deeplab with the 101-layer deep residual network on 2D image inputs").

Residual encoder (bottleneck-free basic blocks, strides 2 per stage down to `output_stride`,
then dilated stages as DeepLab does instead of further downsampling), an atrous spatial
pyramid pooling head (parallel dilated 3x3 convolutions + image pooling), a 1x1 classifier
with 5 outputs (one per ordinal bit; sigmoid applied by the losses / inference) and bilinear
upsampling of the logits to the input size. No image-level pooling branch by default (DeepLab
v2's ASPP): the network is then purely local, so training on patches and predicting whole
slices see the same statistics.

Depth and width are configurable: `FocalNetConfig()` is the light CPU configuration used for
the demo model; `FocalNetConfig.paper_like()` is closer to ResNet-101 (3-4-23-3 blocks), for
a GPU. GroupNorm replaces BatchNorm: the mutual finding loss runs every batch three times
with different (blanked) inputs, which would otherwise pollute BatchNorm running statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ordinal import N_BITS


@dataclass
class FocalNetConfig:
    in_channels: int = 2
    width: int = 16  # channels of the stem; stage i has width * 2**i
    blocks: tuple[int, ...] = (1, 1, 1)  # residual blocks per stage
    output_stride: int = 4  # stages after this stride are dilated instead of strided
    aspp_rates: tuple[int, ...] = (1, 2, 4)
    aspp_channels: int = 32
    image_pooling: bool = False  # DeepLab v3's image-level branch; v2 (the paper's era) has none
    out_channels: int = N_BITS

    @classmethod
    def paper_like(cls) -> "FocalNetConfig":
        return cls(width=64, blocks=(3, 4, 23, 3), output_stride=8, aspp_rates=(6, 12, 18, 24), aspp_channels=256)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "FocalNetConfig":
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.norm1 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.norm2 = _norm(cout)
        self.skip = None
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + (x if self.skip is None else self.skip(x)))


class ASPP(nn.Module):
    def __init__(self, cin: int, cout: int, rates: tuple[int, ...], image_pooling: bool = False):
        super().__init__()
        self.branches = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(cin, cout, 1 if r == 1 else 3, padding=0 if r == 1 else r, dilation=r, bias=False),
                           _norm(cout), nn.ReLU(inplace=True)) for r in rates])
        self.pool = (nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(inplace=True))
                     if image_pooling else None)
        self.project = nn.Sequential(nn.Conv2d(cout * (len(rates) + int(image_pooling)), cout, 1, bias=False),
                                     _norm(cout), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [b(x) for b in self.branches]
        if self.pool is not None:
            feats.append(self.pool(x).expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(feats, dim=1))


class FocalNet(nn.Module):
    """(B, 2, H, W) normalised [T2, ADC] slices -> (B, 5, H, W) logits of the ordinal bits."""

    def __init__(self, config: FocalNetConfig = FocalNetConfig()):
        super().__init__()
        self.config = config
        w = config.width
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, w, 3, padding=1, bias=False), _norm(w), nn.ReLU(inplace=True))
        stages, cin, stride, dilation = [], w, 1, 1
        for i, n in enumerate(config.blocks):
            cout = w * 2 ** i
            s = 1 if i == 0 else 2
            if stride * s > config.output_stride:  # DeepLab: keep resolution, grow the dilation instead
                dilation, s = dilation * s, 1
            stride *= s
            layers = [ResidualBlock(cin, cout, s, dilation)] + [ResidualBlock(cout, cout, 1, dilation) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.aspp = ASPP(cin, config.aspp_channels, config.aspp_rates, config.image_pooling)
        self.classifier = nn.Conv2d(config.aspp_channels, config.out_channels, 1)
        # start from the prior "almost everything is non-lesion" (as RetinaNet does) so the
        # first focal-loss steps are not dominated by the background
        nn.init.constant_(self.classifier.bias, -4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y = self.classifier(self.aspp(self.stages(self.stem(x))))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)
