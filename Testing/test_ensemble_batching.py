"""Ensemble members run in one batched call (the CUDA path, `ensemble.StackedMembers`: the full
network) give the outputs of the members run one after the other in their inference form
(`inference_network.InferenceNetwork`), on the CPU: the published tiny test vectors, a random
25-member ensemble and the demo model; the faster decoding gives the toolkit's boxes."""

from __future__ import annotations

import os

import numpy as np
import torch

from ProstateLesionCADLib.detection.retina_unet.anchors import anchors_tensor
from ProstateLesionCADLib.detection.retina_unet.decoding import refine_detections
from ProstateLesionCADLib.detection.retina_unet.ensemble import StackedMembers
from ProstateLesionCADLib.detection.retina_unet.inference import RetinaUNetDetector, decode_member, model_input
from ProstateLesionCADLib.detection.retina_unet.mdt_import import convert_state_dict
from ProstateLesionCADLib.detection.retina_unet.network import RetinaUNet, make_config
from ProstateLesionCADLib.device import usable_cores

TINY = {"start_filts": 4, "n_blocks": [2, 2, 2, 2], "n_rpn_features": 16, "patch_size": [64, 64, 24]}
SMALL = {"start_filts": 2, "n_blocks": [1, 1, 1, 1], "n_rpn_features": 4, "patch_size": [32, 32, 8]}


def _random_states(cfg, n: int) -> list[dict]:
    """n different members with non-trivial BatchNorm statistics (as trained ones have)."""
    states = []
    for seed in range(n):
        torch.manual_seed(seed)
        net = RetinaUNet(cfg)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.normal_(0, 0.2)
        states.append(net.state_dict())
    return states


def _assert_same_ensemble_output(a, b):
    np.testing.assert_allclose(a.seg_mean, b.seg_mean, atol=1e-5, rtol=0)
    assert a.n_predictions == b.n_predictions
    assert len(a.boxes) == len(b.boxes)
    for p, q in zip(a.boxes, b.boxes):
        assert p.cls == q.cls
        np.testing.assert_allclose(p.coords, q.coords, atol=1e-5, rtol=0)
        np.testing.assert_allclose([p.score, *p.class_probs], [q.score, *q.class_probs], atol=1e-5, rtol=0)


def test_stacked_members_reproduce_the_published_tiny_vectors(reference_dir):
    mdt = reference_dir / "mdt_retina_unet"
    cfg = make_config(**TINY)
    net = RetinaUNet(cfg).eval()
    published = convert_state_dict(torch.load(mdt / "weights_tiny.pt"), net)
    states = [published] + _random_states(cfg, 2)
    x = torch.load(mdt / "input_tiny.pt")
    with torch.inference_mode():
        cls, box, seg = StackedMembers(net)(StackedMembers.stack(states, torch.device("cpu")), x)
    expected = torch.load(mdt / "expected_outputs_tiny.pt")
    torch.testing.assert_close(cls[0], expected["class_logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(box[0], expected["bbox_deltas"], atol=1e-5, rtol=0)
    torch.testing.assert_close(seg[0], expected["seg_logits"], atol=1e-5, rtol=0)
    for k, state in enumerate(states):
        net.load_state_dict(state)
        with torch.inference_mode():
            one = net(x)
        for batched, single in zip((cls[k], box[k], seg[k]), one):
            torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    assert not torch.allclose(cls[1], cls[2])  # the members really differ


def test_random_25_member_ensemble_batched_equals_one_by_one():
    cfg = make_config(**SMALL)
    members = [({"fold": i // 5, "rank": i % 5, "epoch": i}, s) for i, s in enumerate(_random_states(cfg, 25))]
    x = np.random.default_rng(3).normal(size=(8, 32, 32, 8)).astype(np.float32)
    det = RetinaUNetDetector.from_states("random-25", cfg, members, "cpu", min_confidence=0.2)
    assert det.batch_size() == 1  # one member at a time on the CPU unless asked
    one_by_one = det.predict(x)
    det.members_per_batch = 7  # uneven batches: 7 + 7 + 7 + 4
    batched = det.predict(x)
    assert one_by_one.n_predictions == 25 and len(one_by_one.boxes) > 0
    _assert_same_ensemble_output(one_by_one, batched)


def test_demo_model_batched_equals_one_by_one():
    from ProstateLesionCADLib.demo.detector_model import DEMO_NAME, demo_phantom
    from ProstateLesionCADLib.detection.retina_unet.detect import model_grid
    from ProstateLesionCADLib.detection.retina_unet.inference import regrid
    from ProstateLesionCADLib.models.package import find_model
    from ProstateLesionCADLib.preprocessing.preprocess import preprocess

    pkg = find_model(DEMO_NAME, task="detector")
    phantom = demo_phantom(9200, ggg=[3])
    case = phantom.case
    prep = regrid(preprocess(case, case.prostate, case.zones), *model_grid(pkg))
    x = model_input(prep, pkg.card).array
    det = RetinaUNetDetector(pkg, "cpu")
    one_by_one = det.predict(x, tta=True)  # mirror TTA: the flips are undone per member in both paths
    det.members_per_batch = len(det.states)
    batched = det.predict(x, tta=True)
    assert len(one_by_one.boxes) > 0 and one_by_one.seg_mean.max() > 0.5  # the lesion is found
    _assert_same_ensemble_output(one_by_one, batched)


def test_decoding_only_candidate_anchors_gives_the_toolkit_boxes(reference_dir):
    cfg = make_config(**TINY)
    anchors = anchors_tensor(cfg)
    expected = torch.load(reference_dir / "mdt_retina_unet" / "expected_outputs_tiny.pt")
    cls, deltas = expected["class_logits"], expected["bbox_deltas"]
    gen = torch.Generator().manual_seed(0)
    # the reference outputs, and a batch of two with sharper logits (many anchors above threshold)
    cases = [(cls, deltas), (torch.cat([cls, cls.flip(1)]) * 6 + torch.randn(2, *cls.shape[1:], generator=gen),
                             torch.cat([deltas, deltas.flip(1)]))]
    compared = 0
    for logits, box_deltas in cases:
        for min_confidence in (0.05, 0.21, 0.5):
            full = refine_detections(logits, box_deltas, anchors, cfg, min_confidence=min_confidence)
            fast = decode_member(logits, box_deltas, anchors, cfg, min_confidence)
            assert [[(b.coords, b.score, b.cls, b.class_probs) for b in per] for per in full] == \
                   [[(b.coords, b.score, b.cls, b.class_probs) for b in per] for per in fast]
            compared += sum(len(per) for per in full)
    assert compared > 100


def test_cpu_threads_never_exceed_usable_cores():
    cores = usable_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert cores <= len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(cores + 3)
        cfg = make_config(**SMALL)
        RetinaUNetDetector.from_states("t", cfg, [({}, _random_states(cfg, 1)[0])], "cpu")
        assert torch.get_num_threads() == cores
    finally:
        torch.set_num_threads(before)
