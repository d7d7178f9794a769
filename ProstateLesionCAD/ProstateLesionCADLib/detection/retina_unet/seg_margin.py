"""The segmentation margin l1 - l0 of a two-class Retina U-Net without building P0.

In the published network P0 = lateral0(C0) + up(P1) at full resolution (160x160x24, 30
channels), `up` being trilinear upsampling by (2, 2, 1) with align_corners=False, and the
margin is one 3x3x3 convolution `v` of P0 (P0's output convolution and the seg head
composed, zero padding). Everything in that chain is linear, so:

- v * lateral0(C0) = (v o lateral0) * C0: one convolution 15 -> 1 on C0; lateral0's bias
  moves onto P1, since the upsampling's weights sum to one;
- v * up(P1) is, for each of the four (y, x) parities of the output, a 3x3x3 convolution of
  P1 itself (replicate-padded in y and x, as the upsampling clamps at the borders): one
  convolution 30 -> 4 on the 80x80x24 grid, its four outputs interleaved. Only the output
  rows and columns at the border of the full grid differ, where the convolution's zero
  padding meets the upsampled image; they are computed from the upsampled border strips.

Same arithmetic in another order: the margin agrees with the full network's to float32
rounding, and no 30-channel full-resolution tensor is made (for a paper-size member on two
CPU cores, about 45 ms instead of 115 ms for lateral0, the upsampling, the sum and the margin
convolution).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# Output index 2i + a of the (2, 2, 1) upsampling, read by a 3-tap convolution at offsets
# d = -1, 0, 1, as weights on the input rows i + t, t = -1, 0, 1: _PHASE[a][t + 1][d + 1].
# (Output 2i is 0.25 * in[i - 1] + 0.75 * in[i], output 2i + 1 is 0.75 * in[i] + 0.25 * in[i + 1].)
_PHASE = torch.tensor([[[0.75, 0.25, 0.0], [0.25, 0.75, 0.75], [0.0, 0.0, 0.25]],
                       [[0.25, 0.0, 0.0], [0.75, 0.75, 0.25], [0.0, 0.25, 0.75]]], dtype=torch.float64)

Conv = Callable[[torch.Tensor, torch.Tensor, tuple], torch.Tensor]  # (x, weight, padding) -> x * weight


def _up(p: torch.Tensor) -> torch.Tensor:
    return F.interpolate(p, scale_factor=(2, 2, 1), mode="trilinear", align_corners=False)


class SegMargin:
    """`v`: the composed margin convolution (1, 30, 3, 3, 3) and its bias (1,); `lateral`:
    lateral0's weight (30, 15, 1, 1, 1) and bias (30,)."""

    def __init__(self, v: torch.Tensor, v_bias: torch.Tensor, lateral_w: torch.Tensor, lateral_b: torch.Tensor,
                 memory_format: torch.memory_format):
        v64 = v.double()
        self.v = v
        self.bias = v_bias
        self.lateral_b = lateral_b.view(1, -1, 1, 1, 1)
        self.on_c0 = torch.einsum("ocyxz,cj->ojyxz", v64, lateral_w.double().flatten(1)).to(v.dtype) \
            .contiguous(memory_format=memory_format)
        phases = torch.einsum("ytd,xse,ocdez->yxctsz", _PHASE, _PHASE, v64)  # (2, 2, 30, 3, 3, 3): ay, ax first
        self.on_p1 = phases.reshape(4, *phases.shape[2:]).to(v.dtype).contiguous(memory_format=memory_format)

    def __call__(self, c0: torch.Tensor, p1: torch.Tensor, conv: Conv) -> torch.Tensor:
        """The margin (b, Y, X, Z) from C0 (b, 15, Y, X, Z) and P1's pre-output (b, 30, Y/2, X/2, Z)."""
        p1 = p1 + self.lateral_b.to(p1.dtype)
        b, _, ny, nx, nz = p1.shape
        padded = F.pad(p1, (0, 0, 1, 1, 1, 1), mode="replicate")
        phases = conv(padded, self.on_p1, (0, 0, 1))  # (b, 4, ny, nx, nz)
        out = phases.reshape(b, 2, 2, ny, nx, nz).permute(0, 3, 1, 4, 2, 5).reshape(b, 2 * ny, 2 * nx, nz)
        # the border rows and columns, from the two upsampled rows (columns) next to each border
        out[:, 0] = conv(_up(p1[:, :, :2])[:, :, :2], self.v, (1, 1, 1))[:, 0, 0]
        out[:, -1] = conv(_up(p1[:, :, -2:])[:, :, -2:], self.v, (1, 1, 1))[:, 0, -1]
        out[:, :, 0] = conv(_up(p1[:, :, :, :2])[:, :, :, :2], self.v, (1, 1, 1))[:, 0, :, 0]
        out[:, :, -1] = conv(_up(p1[:, :, :, -2:])[:, :, :, -2:], self.v, (1, 1, 1))[:, 0, :, -1]
        return out.add_(conv(c0, self.on_c0, (1, 1, 1))[:, 0]).add_(self.bias.to(out.dtype))
