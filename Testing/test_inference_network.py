"""The inference form of a member (`inference_network.InferenceNetwork`: folded BatchNorm,
channels-last oneDNN convolutions, the seg margin, box deltas only where the decoding reads
them) computes what the full network computes: the published tiny test vectors, the full
network's deltas at any chosen anchors (near map borders too), and the same lesion maps."""

from __future__ import annotations

import pytest
import torch

from ProstateLesionCADLib.detection.retina_unet.inference import lesion_map
from ProstateLesionCADLib.detection.retina_unet.inference_network import InferenceNetwork, usable_anchors
from ProstateLesionCADLib.detection.retina_unet.mdt_import import convert_state_dict
from ProstateLesionCADLib.detection.retina_unet.network import RetinaUNet, feature_shapes, make_config

TINY = {"start_filts": 4, "n_blocks": [2, 2, 2, 2], "n_rpn_features": 16, "patch_size": [64, 64, 24]}


def _published(reference_dir, variant: str):
    mdt = reference_dir / "mdt_retina_unet"
    net = RetinaUNet(make_config(**TINY)).eval()
    net.load_state_dict(convert_state_dict(torch.load(mdt / f"weights_tiny{variant}.pt"), net))
    return net, torch.load(mdt / "input_tiny.pt"), torch.load(mdt / f"expected_outputs_tiny{variant}.pt")


@pytest.mark.parametrize("variant,atol,rtol", [("", 1e-5, 0.0), ("_stress", 1e-3, 1e-4)])
def test_published_tiny_vectors_reproduced(reference_dir, variant, atol, rtol):
    net, x, expected = _published(reference_dir, variant)
    with torch.inference_mode():
        out = InferenceNetwork(net)(x, min_confidence=0.0)  # every anchor reaches 0: all deltas computed
    assert out.usable.numel() == expected["bbox_deltas"].shape[1] == 21_060
    torch.testing.assert_close(out.class_logits, expected["class_logits"], atol=atol, rtol=rtol)
    torch.testing.assert_close(out.deltas, expected["bbox_deltas"], atol=atol, rtol=rtol)
    seg = expected["seg_logits"]
    assert out.seg_is_margin and out.seg.shape == seg[:, 0].shape
    torch.testing.assert_close(out.seg, seg[:, 1] - seg[:, 0], atol=2 * atol, rtol=rtol)


def _anchor(cfg, level: int, iy: int, ix: int, iz: int, a: int) -> int:
    shapes = feature_shapes(cfg)
    n = cfg["n_anchors_per_pos"]
    offset = sum(y * x * z * n for y, x, z in shapes[:level])
    _, nx, nz = shapes[level]
    return offset + ((iy * nx + ix) * nz + iz) * n + a


def test_deltas_at_chosen_anchors_equal_the_whole_map(reference_dir):
    net, x, _ = _published(reference_dir, "_stress")  # O(1) outputs: every layer matters
    cfg = net.config
    shapes = feature_shapes(cfg)
    assert shapes[:2] == [(16, 16, 24), (8, 8, 12)] and shapes[3] == (2, 2, 3)
    chosen = sorted({
        _anchor(cfg, 0, 7, 9, 11, 1),  # inside P2: the crop's borders lie inside the map
        _anchor(cfg, 0, 8, 9, 12, 2),
        _anchor(cfg, 1, 0, 0, 0, 0),  # corners of P3: the crop reaches the map's borders
        _anchor(cfg, 1, 7, 3, 11, 2),
        _anchor(cfg, 3, 1, 0, 1, 0),  # P5
    })
    usable = torch.tensor(chosen)
    with torch.inference_mode():
        full = net(x)[1]
        prepared = InferenceNetwork(net)
        seen = []
        run_head = prepared._head
        prepared._head = lambda head, t: (seen.append((head is prepared.regressor, tuple(t.shape[2:])))
                                          or run_head(head, t))
        out = prepared(x, min_confidence=0.5, usable=usable)
    assert out.deltas.shape == (1, len(chosen), 6)
    torch.testing.assert_close(out.deltas, full[:, usable], atol=1e-4, rtol=1e-5)
    # P2: y 7..8, x 9, z 11..12 widened by the head's 5 convolutions; P3 and P5: their whole maps
    assert [shape for is_regressor, shape in seen if is_regressor] == [(12, 11, 12), (8, 8, 12), (2, 2, 3)]
    with torch.inference_mode():  # no anchor asked for: no regressor work, no deltas
        seen.clear()
        none = prepared(x, min_confidence=0.5, usable=torch.tensor([], dtype=torch.long))
    assert none.deltas.shape == (1, 0, 6) and not any(is_regressor for is_regressor, _ in seen)
    torch.testing.assert_close(none.class_logits, out.class_logits)


def test_usable_anchors_are_those_reaching_the_threshold(reference_dir):
    net, x, expected = _published(reference_dir, "_stress")
    logits = expected["class_logits"]
    probs = torch.softmax(logits, dim=2)[0, :, 1:].amax(dim=1)
    threshold = float(probs.quantile(0.99))
    usable = usable_anchors(logits, threshold)
    assert 0 < usable.numel() < logits.shape[1]
    assert torch.equal(usable, torch.nonzero(probs >= threshold).flatten())
    with torch.inference_mode():
        out = InferenceNetwork(net)(x, min_confidence=threshold)
    assert torch.equal(out.usable, usable)
    torch.testing.assert_close(out.deltas, expected["bbox_deltas"][:, usable], atol=1e-3, rtol=1e-4)


def test_more_than_two_seg_classes_keep_the_logits():
    cfg = make_config(start_filts=2, n_blocks=[1, 1, 1, 1], n_rpn_features=4, patch_size=[32, 32, 8],
                      num_seg_classes=3)
    torch.manual_seed(0)
    net = RetinaUNet(cfg).eval()
    x = torch.randn(1, 8, 32, 32, 8)
    with torch.inference_mode():
        out = InferenceNetwork(net)(x, 0.25)
        seg = net(x)[2]
    assert not out.seg_is_margin
    torch.testing.assert_close(out.seg, seg, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["argmax_vote", "softmax_mean"])
def test_lesion_map_from_the_margin_equals_the_one_from_the_logits(mode):
    logits = torch.randn(2, 6, 5, 4, generator=torch.Generator().manual_seed(1)) * 3
    logits[1, 0, 0, 0] = logits[0, 0, 0, 0]  # a tie: argmax takes background, as the margin 0 does
    from_logits = lesion_map(logits, False, mode)
    from_margin = lesion_map(logits[1] - logits[0], True, mode)
    torch.testing.assert_close(from_margin, from_logits, atol=1e-6, rtol=0)
    if mode == "argmax_vote":
        assert from_margin[0, 0, 0] == 0 and set(from_margin.unique().tolist()) == {0.0, 1.0}


def test_the_path_without_onednn_gives_the_same_outputs(reference_dir):
    """GPUs and CPUs without oneDNN run plain `conv3d`: the same outputs."""
    net, x, expected = _published(reference_dir, "")
    prepared = InferenceNetwork(net)
    prepared.onednn = False
    with torch.inference_mode():
        out = prepared(x, min_confidence=0.0)
    torch.testing.assert_close(out.class_logits, expected["class_logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.deltas, expected["bbox_deltas"], atol=1e-5, rtol=0)


def test_runs_under_autocast_as_the_full_network_does(reference_dir):
    """Mixed precision (float16 autocast on CUDA; bfloat16 on the CPU here): half-precision
    convolution outputs meet float32 ones in the in-place sums, and the outputs stay as close
    to float32 as the full network's under the same autocast."""
    net, x, expected = _published(reference_dir, "_stress")
    prepared = InferenceNetwork(net)
    prepared.onednn = False  # the plain path autocast applies to, as on a GPU
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = prepared(x, min_confidence=0.0)
        full = net(x)
    ref = expected["class_logits"]
    assert out.class_logits.dtype == torch.bfloat16
    ours_err = (out.class_logits.float() - ref).abs().max()
    full_err = (full[0].float() - ref).abs().max()
    assert 0 < ours_err < 3 * full_err + 1e-3


def test_seg_margin_equals_the_chain_it_replaces():
    """lateral0(C0) + up(P1), then the 3x3x3 margin convolution, at every voxel: the border
    rows and columns (where zero padding meets the upsampled image) and the interior."""
    import torch.nn.functional as F

    from ProstateLesionCADLib.detection.retina_unet.seg_margin import SegMargin

    gen = torch.Generator().manual_seed(5)
    c0 = torch.randn(2, 15, 32, 64, 8, generator=gen)
    p1 = torch.randn(2, 30, 16, 32, 8, generator=gen)
    v, v_b = torch.randn(1, 30, 3, 3, 3, generator=gen), torch.randn(1, generator=gen)
    lat_w, lat_b = torch.randn(30, 15, 1, 1, 1, generator=gen), torch.randn(30, generator=gen)
    p0 = F.conv3d(c0, lat_w, lat_b) + F.interpolate(p1, scale_factor=(2, 2, 1), mode="trilinear",
                                                    align_corners=False)
    expected = F.conv3d(p0, v, v_b, padding=1)[:, 0]
    margin = SegMargin(v, v_b, lat_w, lat_b, torch.contiguous_format)(
        c0, p1, lambda x, w, padding: F.conv3d(x, w, None, 1, padding))
    assert margin.shape == expected.shape == (2, 32, 64, 8)
    scale = float(expected.abs().max())
    for region in (margin[:, 0] - expected[:, 0], margin[:, -1] - expected[:, -1],
                   margin[:, :, 0] - expected[:, :, 0], margin[:, :, -1] - expected[:, :, -1],
                   margin[:, 1:-1, 1:-1] - expected[:, 1:-1, 1:-1]):
        assert float(region.abs().max()) < 1e-5 * scale
