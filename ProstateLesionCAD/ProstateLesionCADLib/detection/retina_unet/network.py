"""3D Retina U-Net (main paper, "Architecture: Retina U-Net" and "Hyperparameters").

ResNet-like encoder (C0, C1 single convolution levels; C2..C5 bottleneck stages with
`n_blocks` blocks), an FPN decoder extended to the two stride-1/stride-2 levels for the
segmentation output, and classifier / box-regressor heads shared over P2..P5. The
topology follows OscarPellicer/prostate_lesion_detection (MDT_ProstateX/experiments/exp0/backbone.py,
models/retina_unet.py) so that the
authors' published checkpoints load through `mdt_import.mdt_key`; every size comes from
the config dict stored in model.json (`architecture.config`).

Tensor layout: (batch, channels, y, x, z), as in the published network.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

# Published exp0 configuration (exp0/configs.py); other models override entries.
EXP0_CONFIG: dict[str, Any] = {
    "n_channels": 8,
    "start_filts": 15,
    "end_filts": 30,
    "n_blocks": [3, 7, 21, 3],
    "n_rpn_features": 64,
    "head_classes": 5,
    "num_seg_classes": 2,
    "n_anchors_per_pos": 3,
    "patch_size": [160, 160, 24],
    "backbone_strides_xy": [4, 8, 16, 32],
    "backbone_strides_z": [1, 2, 4, 8],
    "anchor_sc": 1.7,
    "anchor_base_xy": 4.0,
    "anchor_base_z": 4.0 / 3.0,
    "bbox_std_dev": [0.1, 0.1, 0.1, 0.2, 0.2, 0.2],
    "pre_nms_limit": 50000,
    "detection_nms_threshold": 1e-5,
    "max_instances_per_batch_element": 30,
    "min_confidence": 0.25,
    "wcs_iou": 1e-5,
    "anchor_matching_iou": 0.5,
    "rpn_train_anchors_per_image": 6,
    "shem_poolsize": 10,
}


def make_config(**overrides: Any) -> dict[str, Any]:
    """The exp0 config with `overrides`; end_filts defaults to 2 x start_filts (3D)."""
    cfg = copy.deepcopy(EXP0_CONFIG)
    if "start_filts" in overrides and "end_filts" not in overrides:
        overrides["end_filts"] = 2 * int(overrides["start_filts"])
    cfg.update(copy.deepcopy(overrides))
    return cfg


class ConvUnit(nn.Module):
    """Convolution (always with bias, as the toolkit), optional BatchNorm, optional ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride=1, padding: int = 0,
                 norm: bool = True, act: bool = True):
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=padding, bias=True)
        self.norm = nn.BatchNorm3d(c_out) if norm else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.act else x


class Bottleneck(nn.Module):
    """ResNet v1 bottleneck (expansion 4); the stride sits on the first 1x1x1 conv."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride=1, project: bool = False):
        super().__init__()
        self.conv1 = ConvUnit(c_in, planes, 1, stride=stride)
        self.conv2 = ConvUnit(planes, planes, 3, padding=1)
        self.conv3 = ConvUnit(planes, planes * 4, 1, act=False)
        self.downsample = ConvUnit(c_in, planes * 4, 1, stride=stride, act=False) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + shortcut)


class Encoder(nn.Module):
    """C0 (stride 1), C1 (7^3 conv, stride 2,2,1), C2 (max-pool 2,2,1 + blocks), C3..C5 (stride 2)."""

    def __init__(self, n_channels: int, start_filts: int, n_blocks: list[int]):
        super().__init__()
        sf = start_filts
        self.c0 = nn.ModuleList([ConvUnit(n_channels, sf, 3, padding=1), ConvUnit(sf, sf, 3, padding=1)])
        self.c1 = ConvUnit(sf, sf, 7, stride=(2, 2, 1), padding=3)
        self.pool = nn.MaxPool3d(3, stride=(2, 2, 1), padding=1)
        stages = []
        c_in = sf
        for level, blocks in enumerate(n_blocks):
            planes = sf * 2 ** level
            stride = 1 if level == 0 else 2
            stage = [Bottleneck(c_in, planes, stride=stride, project=True)]
            stage += [Bottleneck(planes * 4, planes) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            c_in = planes * 4
        self.stages = nn.ModuleList(stages)  # C2..C5
        self.out_channels = [sf, sf] + [sf * 4 * 2 ** k for k in range(len(n_blocks))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c0 = self.c0[1](self.c0[0](x))
        c1 = self.c1(c0)
        feats = [c0, c1]
        h = self.pool(c1)
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats  # C0..C5


class Decoder(nn.Module):
    """FPN without norm/activation: 1x1x1 laterals, top-down addition, 3x3x3 output convs.

    P5..P2 merge with nearest x2 upsampling in all axes, P1 and P0 with trilinear (2,2,1).
    `smooth[1]` (P1 output conv) exists in the published state_dict but is never applied.
    """

    def __init__(self, in_channels: list[int], end_filts: int):
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv3d(c, end_filts, 1) for c in in_channels])
        self.smooth = nn.ModuleList([nn.Conv3d(end_filts, end_filts, 3, padding=1) for _ in in_channels])
        self.smooth[1].requires_grad_(False)  # unused, kept for the published state_dict layout

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        pre = self.lateral[5](feats[5])
        pres = {5: pre}
        for k in (4, 3, 2):
            pre = self.lateral[k](feats[k]) + F.interpolate(pre, scale_factor=2, mode="nearest")
            pres[k] = pre
        for k in (1, 0):
            pre = self.lateral[k](feats[k]) + F.interpolate(pre, scale_factor=(2, 2, 1), mode="trilinear",
                                                            align_corners=False)
            pres[k] = pre
        return [self.smooth[k](pres[k]) for k in (0, 2, 3, 4, 5)]  # P0, P2..P5


class Head(nn.Module):
    """Four 3x3x3 conv+ReLU (no norm) and a final 3x3x3 conv; output (b, anchors, n_out)."""

    def __init__(self, c_in: int, features: int, n_anchors: int, n_out: int):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv3d(c_in if i == 0 else features, features, 3, padding=1)
                                    for i in range(4)])
        self.final = nn.Conv3d(features, n_anchors * n_out, 3, padding=1)
        self.n_out = n_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        x = self.final(x).permute(0, 2, 3, 4, 1).contiguous()
        return x.view(x.shape[0], -1, self.n_out)


class RetinaUNet(nn.Module):
    """Retina U-Net; forward returns raw (class_logits, bbox_deltas, seg_logits)."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = copy.deepcopy(config)
        cfg = self.config
        y, x, z = cfg["patch_size"]
        if y % 32 or x % 32 or z % 8:
            raise ValueError(f"patch_size {cfg['patch_size']}: y and x must be multiples of 32 and z of 8.")
        self.encoder = Encoder(cfg["n_channels"], cfg["start_filts"], cfg["n_blocks"])
        self.decoder = Decoder(self.encoder.out_channels, cfg["end_filts"])
        n_anchors = cfg["n_anchors_per_pos"]
        self.classifier = Head(cfg["end_filts"], cfg["n_rpn_features"], n_anchors, cfg["head_classes"])
        self.box_regressor = Head(cfg["end_filts"], cfg["n_rpn_features"], n_anchors, 6)
        self.seg_head = nn.Conv3d(cfg["end_filts"], cfg["num_seg_classes"], 1)

    def forward(self, x: torch.Tensor, return_fpn: bool = False):
        pyramid = self.decoder(self.encoder(x))
        detection_maps = pyramid[1:]
        class_logits = torch.cat([self.classifier(p) for p in detection_maps], dim=1)
        bbox_deltas = torch.cat([self.box_regressor(p) for p in detection_maps], dim=1)
        seg_logits = self.seg_head(pyramid[0])
        if return_fpn:
            return class_logits, bbox_deltas, seg_logits, pyramid
        return class_logits, bbox_deltas, seg_logits


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def anchor_scales(cfg: dict[str, Any]) -> tuple[list[list[float]], list[list[float]]]:
    """Per level k and scale i: base * sc**k * sc**(i/3), xy and z (the toolkit's generate_pyramid_anchors)."""
    if "anchor_scales_xy" in cfg:
        return cfg["anchor_scales_xy"], cfg["anchor_scales_z"]
    sc = cfg["anchor_sc"]
    n = cfg["n_anchors_per_pos"]
    levels = len(cfg["backbone_strides_xy"])
    xy = [[cfg["anchor_base_xy"] * sc ** k * sc ** (i / n) for i in range(n)] for k in range(levels)]
    z = [[cfg["anchor_base_z"] * sc ** k * sc ** (i / n) for i in range(n)] for k in range(levels)]
    return xy, z


def feature_shapes(cfg: dict[str, Any]) -> list[tuple[int, int, int]]:
    y, x, z = cfg["patch_size"]
    return [(math.ceil(y / sxy), math.ceil(x / sxy), math.ceil(z / sz))
            for sxy, sz in zip(cfg["backbone_strides_xy"], cfg["backbone_strides_z"])]
