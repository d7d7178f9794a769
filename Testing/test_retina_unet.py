"""Retina U-Net topology, anchors, decoding and MDT import against the reference vectors
in Testing/data/reference/mdt_retina_unet (FACTS.md sections 1-5, 9, 10)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ProstateLesionCADLib import cli
from ProstateLesionCADLib.models.package import load_model_package
from ProstateLesionCADLib.detection.retina_unet.anchors import anchors_tensor, generate_anchors
from ProstateLesionCADLib.detection.retina_unet.decoding import refine_detections
from ProstateLesionCADLib.detection.retina_unet.mdt_import import convert_state_dict, mdt_key
from ProstateLesionCADLib.detection.retina_unet.network import RetinaUNet, count_parameters, make_config
from ProstateLesionCADLib.detection.retina_unet.ensemble import load_member_states

TINY = {"start_filts": 4, "n_blocks": [2, 2, 2, 2], "n_rpn_features": 16, "patch_size": [64, 64, 24]}


@pytest.fixture(scope="module")
def mdt_dir(reference_dir):
    return reference_dir / "mdt_retina_unet"


def _run(net, x):
    torch.set_num_threads(1)
    with torch.no_grad():
        return net.eval()(x)


@pytest.mark.parametrize("variant,atol,rtol", [("", 1e-5, 0.0), ("_stress", 1e-3, 1e-4)])
def test_tiny_vectors_reproduced(mdt_dir, variant, atol, rtol):
    cfg = make_config(**TINY)
    net = RetinaUNet(cfg)
    assert count_parameters(net) == 188_247
    net.load_state_dict(convert_state_dict(torch.load(mdt_dir / f"weights_tiny{variant}.pt"), net))
    expected = torch.load(mdt_dir / f"expected_outputs_tiny{variant}.pt")
    cls, box, seg = _run(net, torch.load(mdt_dir / "input_tiny.pt"))
    torch.testing.assert_close(cls, expected["class_logits"], atol=atol, rtol=rtol)
    torch.testing.assert_close(box, expected["bbox_deltas"], atol=atol, rtol=rtol)
    torch.testing.assert_close(seg, expected["seg_logits"], atol=atol, rtol=rtol)
    assert torch.equal(anchors_tensor(cfg), expected["anchors"])
    assert np.array_equal(generate_anchors(cfg), expected["anchors_float64"].numpy())
    # decoding of the reference outputs equals the toolkit's refine_detections (CPU NMS stand-in)
    boxes = refine_detections(expected["class_logits"], expected["bbox_deltas"], anchors_tensor(cfg), cfg,
                              min_confidence=0.0, drop_empty=False)[0]
    stub = expected["detections_cpu_nms_stub"].numpy()
    mine = np.array([b.coords + [b.cls, b.score] for b in boxes])
    np.testing.assert_allclose(mine, stub[:, [0, 1, 2, 3, 4, 5, 7, 8]], atol=1e-6)


def test_exp0_manifest_and_anchors(mdt_dir):
    manifest = json.loads((mdt_dir / "manifest_exp0.json").read_text())
    net = RetinaUNet(make_config())
    assert count_parameters(net) == manifest["total_parameters"] == 5_637_748
    gen = torch.Generator().manual_seed(0)
    state = {}
    for e in manifest["entries"]:
        dtype = getattr(torch, e["dtype"])
        state[e["key"]] = (torch.randint(0, 10, e["shape"], generator=gen, dtype=dtype) if dtype == torch.int64
                           else torch.randn(e["shape"], generator=gen, dtype=dtype))
    assert len(state) == 809
    converted = convert_state_dict(state, net)
    net.load_state_dict(converted, strict=True)
    assert sorted(mdt_key(k) for k in net.state_dict()) == sorted(state)
    key = "Fpn.C4.20.conv2.0.0.weight"  # the last block of the 21-block stage
    ours = next(k for k in converted if mdt_key(k) == key)
    assert torch.equal(net.state_dict()[ours], state[key])
    ref = torch.load(mdt_dir / "anchors_exp0_160x160x24.pt")
    anchors = generate_anchors(make_config())
    assert anchors.shape == (131_625, 6)
    assert np.array_equal(anchors, ref["anchors_float64"].numpy())
    assert torch.equal(anchors_tensor(make_config()), ref["anchors_float32"])


def _write_mdt_experiment(root, states: dict[tuple[int, int], dict]):
    for (fold, epoch), state in states.items():
        d = root / f"fold_{fold}" / f"{epoch}_best_checkpoint"
        d.mkdir(parents=True)
        torch.save(state, d / "params.pth")


def test_import_mdt_cli_round_trip(mdt_dir, tmp_path, capsys):
    weights = torch.load(mdt_dir / "weights_tiny_stress.pt")
    other = {k: (v + 0.01 if v.is_floating_point() else v) for k, v in weights.items()}
    exp = tmp_path / "exp"
    _write_mdt_experiment(exp, {(0, 36): weights, (0, 59): other, (1, 79): other})
    np.save(exp / "fold_0" / "36_best_checkpoint" / "epoch_ranking.npy", np.array([59, 36]))
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    out = tmp_path / "pkg"
    assert cli.main(["models", "import-mdt", str(exp), "--out", str(out), "--config", str(tmp_path / "tiny.json")]) == 0
    pkg = load_model_package(out)  # verifies every sha256
    card = pkg.card
    assert card["task"] == "detector" and card["channels"][0] == "T2" and len(card["channels"]) == 8
    assert card["ensemble"]["wbc_fold_pooling"] == "mdt"
    members = card["ensemble"]["members"]
    assert [(m["fold"], m["epoch"], m["rank"]) for m in members] == [(0, 59, 0), (0, 36, 1), (1, 79, 0)]
    cfg, states = load_member_states(pkg)
    net = RetinaUNet(cfg)
    net.load_state_dict(states[1][1])
    expected = torch.load(mdt_dir / "expected_outputs_tiny_stress.pt")
    cls, _, seg = _run(net, torch.load(mdt_dir / "input_tiny.pt"))
    torch.testing.assert_close(cls, expected["class_logits"], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(seg, expected["seg_logits"], atol=1e-3, rtol=1e-4)


def test_import_mdt_rejects_wrong_topology_and_corrupt_file(mdt_dir, tmp_path, capsys):
    weights = torch.load(mdt_dir / "weights_tiny.pt")
    exp = tmp_path / "exp"
    _write_mdt_experiment(exp, {(0, 1): weights})
    out = tmp_path / "pkg"
    # default (exp0) configuration: the tiny checkpoint's shapes do not fit
    assert cli.main(["-q", "models", "import-mdt", str(exp), "--out", str(out)]) == 2  # -q: the error alone
    err = capsys.readouterr().err
    assert "params.pth" in err and "not a Retina U-Net checkpoint" in err and err.count("\n") == 1
    assert not out.exists()
    (exp / "fold_0" / "1_best_checkpoint" / "params.pth").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    assert cli.main(["models", "import-mdt", str(exp), "--out", str(out), "--config", str(tmp_path / "tiny.json")]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert not out.exists()
