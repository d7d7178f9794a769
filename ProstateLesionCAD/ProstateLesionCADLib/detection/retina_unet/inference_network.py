"""One ensemble member prepared for inference: the same function as `network.RetinaUNet`,
computed with less work.

- BatchNorm is folded into the convolution before it (eval mode: BN is an affine map per
  channel), so no separate normalisation pass runs.
- Tensors are channels-last (`torch.channels_last_3d`), in which oneDNN's 3D convolutions
  run about a third faster on the CPU, and every CPU convolution goes to oneDNN: PyTorch's
  own choice falls back to a slow reference kernel for the small maps of C3..C5 and the
  heads on P3..P5.
- P0's 3x3x3 output convolution (30 -> 30) and the 1x1x1 segmentation head (30 -> 2) are
  linear with nothing in between: one 3x3x3 convolution 30 -> 2 with their composed
  weights. With two classes the head only ever feeds an argmax or a softmax, both
  functions of the margin l1 - l0 alone: `seg_margin.SegMargin` computes that margin from C0
  and P1 without building P0 at all.
- The box regressor's output is only read at anchors where some foreground class reaches
  the score threshold (`decoding.refine_detections` drops every other box; see
  `inference.decode_member`). It runs on the bounding box of those anchors' positions per
  pyramid level, widened by the head's receptive radius (one voxel per 3x3x3
  convolution), so the values read are those of the whole map.

Every change is exact in arithmetic and differs only in float32 rounding (about 1e-6 of the
outputs' scale; Testing/test_inference_network.py holds it to the published test vectors).
The full network (`RetinaUNet.forward`) stays the reference and the training path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .network import ConvUnit, RetinaUNet
from .seg_margin import SegMargin

CHANNELS_LAST = torch.channels_last_3d


@dataclass
class _Conv:
    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    stride: tuple
    padding: tuple
    relu: bool = False


@dataclass
class _Head:
    convs: list[_Conv]  # 3x3x3 + ReLU
    final: _Conv
    n_out: int  # outputs per anchor


@dataclass
class MemberOutput:
    """One member's outputs on a batch. `deltas` holds the raw box deltas of the anchors
    `usable` only (b, len(usable), 6), in the order of `usable`. `seg` is the lesion margin
    l1 - l0 (b, Y, X, Z) when `seg_is_margin`, else the seg logits (b, classes, Y, X, Z)."""

    class_logits: torch.Tensor
    usable: torch.Tensor
    deltas: torch.Tensor
    seg: torch.Tensor
    seg_is_margin: bool


def usable_anchors(class_logits: torch.Tensor, min_confidence: float) -> torch.Tensor:
    """Indices (ascending) of the anchors where some foreground class reaches
    `min_confidence` in some batch element."""
    probs = torch.softmax(class_logits.float(), dim=2)
    return torch.nonzero((probs[:, :, 1:] >= min_confidence).any(dim=2).any(dim=0)).flatten()


def _fold(unit: ConvUnit, layout: torch.memory_format) -> _Conv:
    conv = unit.conv
    weight, bias = conv.weight, conv.bias
    if unit.norm is not None:
        bn = unit.norm
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = weight * scale.view(-1, 1, 1, 1, 1)
        bias = (bias - bn.running_mean) * scale + bn.bias
    return _Conv(weight.contiguous(memory_format=layout), bias.contiguous(), conv.stride, conv.padding,
                 unit.act)


def _plain(conv: torch.nn.Conv3d, layout: torch.memory_format, relu: bool = False) -> _Conv:
    return _Conv(conv.weight.contiguous(memory_format=layout), conv.bias, conv.stride, conv.padding, relu)


class InferenceNetwork:
    """`RetinaUNet` with one member's weights (already loaded into `net`), prepared once;
    call it on a (b, C, Y, X, Z) batch with the score threshold of the decoding."""

    def __init__(self, net: RetinaUNet):
        device = next(net.parameters()).device.type
        # channels-last where oneDNN (CPU) and cuDNN (CUDA) have kernels for it; others as stored
        self.layout = layout = CHANNELS_LAST if device in ("cpu", "cuda") else torch.contiguous_format
        with torch.no_grad():
            enc, dec = net.encoder, net.decoder
            self.c0 = [_fold(u, layout) for u in enc.c0]
            self.c1 = _fold(enc.c1, layout)
            self.stages = [[(_fold(b.conv1, layout), _fold(b.conv2, layout), _fold(b.conv3, layout),
                             _fold(b.downsample, layout) if b.downsample is not None else None) for b in stage]
                           for stage in enc.stages]
            self.lateral = [_plain(c, layout) for c in dec.lateral]
            self.smooth = [_plain(c, layout) for c in dec.smooth]
            self.classifier, self.regressor = (
                _Head([_plain(c, layout, relu=True) for c in head.convs], _plain(head.final, layout), head.n_out)
                for head in (net.classifier, net.box_regressor))
            # P0's output convolution followed by the 1x1x1 head: one 3x3x3 convolution
            head_w = net.seg_head.weight.flatten(1)
            smooth0 = dec.smooth[0]
            seg_w = torch.einsum("oc,cikjl->oikjl", head_w, smooth0.weight)
            seg_b = head_w @ smooth0.bias + net.seg_head.bias
            self.seg_is_margin = seg_w.shape[0] == 2
            if self.seg_is_margin:  # the margin alone, from C0 and P1
                lateral0 = dec.lateral[0]
                self.margin = SegMargin((seg_w[1] - seg_w[0]).unsqueeze(0), (seg_b[1] - seg_b[0]).view(1),
                                        lateral0.weight, lateral0.bias, layout)
            else:
                self.seg = _Conv(seg_w.contiguous(memory_format=layout), seg_b, (1, 1, 1), (1, 1, 1))
        self.n_anchors = net.config["n_anchors_per_pos"]
        self.onednn = torch.backends.mkldnn.is_available() and device == "cpu"

    def _conv(self, x: torch.Tensor, c: _Conv) -> torch.Tensor:
        if self.onednn and x.dtype == torch.float32:
            y = torch.ops.aten.mkldnn_convolution(x, c.weight, c.bias, list(c.padding), list(c.stride), [1, 1, 1], 1)
        else:
            y = F.conv3d(x, c.weight, c.bias, c.stride, c.padding)
        return F.relu_(y) if c.relu else y

    def _conv_with(self, x: torch.Tensor, weight: torch.Tensor, padding: tuple) -> torch.Tensor:
        return self._conv(x, _Conv(weight, None, (1, 1, 1), padding))

    def _encoder(self, x: torch.Tensor) -> list[torch.Tensor]:
        c0 = self._conv(self._conv(x, self.c0[0]), self.c0[1])
        c1 = self._conv(c0, self.c1)
        feats = [c0, c1]
        h = F.max_pool3d(c1, 3, stride=(2, 2, 1), padding=1)
        for stage in self.stages:
            for conv1, conv2, conv3, down in stage:
                shortcut = h if down is None else self._conv(h, down)
                h = F.relu_(self._conv(self._conv(self._conv(h, conv1), conv2), conv3).add_(shortcut))
            feats.append(h)
        return feats

    def _pre_outputs(self, feats: list[torch.Tensor]) -> dict[int, torch.Tensor]:
        pre = self._conv(feats[5], self.lateral[5])
        pres = {5: pre}
        for k in (4, 3, 2):
            pre = self._conv(feats[k], self.lateral[k]).add_(F.interpolate(pre, scale_factor=2, mode="nearest"))
            pres[k] = pre
        for k in ((1,) if self.seg_is_margin else (1, 0)):  # the margin needs no P0
            up = F.interpolate(pre, scale_factor=(2, 2, 1), mode="trilinear", align_corners=False)
            pre = self._conv(feats[k], self.lateral[k]).add_(up)
            pres[k] = pre
        return pres

    def _head(self, head: _Head, x: torch.Tensor) -> torch.Tensor:
        for c in head.convs:
            x = self._conv(x, c)
        return self._conv(x, head.final)

    def _regressor_at(self, levels: list[torch.Tensor], usable: torch.Tensor) -> torch.Tensor:
        """Raw box deltas (b, len(usable), 6) of the anchors `usable`, each pyramid level's head
        run on the bounding box of the positions needed plus its receptive radius."""
        head = self.regressor
        radius = len(head.convs) + 1  # one voxel per 3x3x3 convolution
        a = self.n_anchors
        parts, offset = [], 0
        for level in levels:
            b, _, ny, nx, nz = level.shape
            count = ny * nx * nz * a
            local = usable[(usable >= offset) & (usable < offset + count)] - offset
            offset += count
            if local.numel() == 0:
                continue
            pos, anchor = local // a, local % a
            iy, ix, iz = pos // (nx * nz), (pos // nz) % nx, pos % nz
            lo = [max(0, int(v.min()) - radius) for v in (iy, ix, iz)]
            hi = [min(n, int(v.max()) + radius + 1) for v, n in zip((iy, ix, iz), (ny, nx, nz))]
            crop = level[:, :, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].contiguous(memory_format=self.layout)
            out = self._head(head, crop).permute(0, 2, 3, 4, 1)
            out = out.reshape(*out.shape[:4], a, head.n_out)
            parts.append(out[:, iy - lo[0], ix - lo[1], iz - lo[2], anchor])
        if not parts:
            return levels[0].new_zeros((levels[0].shape[0], 0, head.n_out))
        return torch.cat(parts, dim=1)

    def __call__(self, x: torch.Tensor, min_confidence: float,
                 usable: Optional[torch.Tensor] = None) -> MemberOutput:
        """`usable`: the anchors whose deltas to compute (default: those reaching
        `min_confidence`)."""
        x = x.contiguous(memory_format=self.layout)
        feats = self._encoder(x)
        pres = self._pre_outputs(feats)
        levels = [self._conv(pres[k], self.smooth[k]) for k in (2, 3, 4, 5)]
        class_logits = torch.cat([self._head(self.classifier, p).permute(0, 2, 3, 4, 1)
                                  .reshape(p.shape[0], -1, self.classifier.n_out) for p in levels], dim=1)
        if usable is None:
            usable = usable_anchors(class_logits, min_confidence)
        deltas = self._regressor_at(levels, usable)
        if self.seg_is_margin:
            seg = self.margin(feats[0], pres[1], self._conv_with)
        else:
            seg = self._conv(pres[0], self.seg)
        return MemberOutput(class_logits, usable, deltas, seg, self.seg_is_margin)
