"""Retina U-Net training pieces: Random Channel Drop, targets, the unlabeled-case rule,
losses, cyclic LR, a short cross-validation into a model package, `prostate-cad train
detector` on pre-processed phantoms, and the torchrun/DDP path with gloo and 2 CPU
processes (main paper: "Hyperparameters", "Online data augmentation", "Data partitioning")."""

from __future__ import annotations

import json
import os
import shutil
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from ProstateLesionCADLib.preprocessing.crop_geometry import CropGeometry, Grid
from ProstateLesionCADLib.errors import ParameterError
from ProstateLesionCADLib.formats import GroundTruthCase, Lesion
from ProstateLesionCADLib.models.package import load_model_package
from ProstateLesionCADLib.detection.retina_unet.anchors import anchors_tensor
from ProstateLesionCADLib.detection.retina_unet.channel_drop import random_channel_drop
from ProstateLesionCADLib.detection.retina_unet.losses import total_loss
from ProstateLesionCADLib.detection.retina_unet.merge_packages import merge_detectors
from ProstateLesionCADLib.detection.retina_unet.network import RetinaUNet, make_config
from ProstateLesionCADLib.detection.retina_unet.targets import UNKNOWN_CLASS, boxes_from_labels, match_anchors
from ProstateLesionCADLib.detection.retina_unet.train_detector import cross_validate
from ProstateLesionCADLib.detection.retina_unet.training import (TrainingCase, make_optimizer, make_split, train_fold,
                                                       training_settings)

CHANNELS = ["T2", "DWI_LOW", "DWI_HIGH", "ADC", "KTRANS", "DCE_T10", "DCE_T20", "DCE_T30", "PROSTATE", "CG", "PZ"]
CFG = make_config(start_filts=2, n_blocks=[1, 1, 1, 1], n_rpn_features=4, patch_size=[32, 32, 8], n_channels=11)
GEOMETRY = CropGeometry.around(Grid((32, 32, 8), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
                               (15.5, 15.5, 10.5), "given point", (32, 32, 8), (1.0, 1.0, 3.0))


def synthetic_case(i: int, rng: np.random.Generator, classify: bool = True) -> TrainingCase:
    """Bright ellipsoids whose contrast grows with GGG, on noise; masks all ones."""
    img = rng.normal(0, 0.1, (11, 32, 32, 8)).astype(np.float32)
    img[8:] = 1.0
    lab = np.zeros((32, 32, 8), np.int16)
    yy, xx, zz = np.mgrid[:32, :32, :8]
    lesions, ggg = [], {}
    for label in range(1, int(rng.integers(1, 3)) + 1):
        cy, cx, cz, g = int(rng.integers(6, 26)), int(rng.integers(6, 26)), int(rng.integers(2, 6)), int(rng.integers(0, 4))
        m = ((yy - cy) ** 2 + (xx - cx) ** 2) / 9 + (zz - cz) ** 2 / 1.5 <= 1
        lab[m] = label
        img[:8][:, m] += 0.5 + 0.5 * g
        ggg[label] = g if classify else None
        centre = GEOMETRY.crop_index_to_lps([cx, cy, cz])
        lesions.append(Lesion(label, g, tuple(float(v) for v in centre), label))
    return TrainingCase(f"S{i:02d}", img, lab, ggg, classify, GEOMETRY, GroundTruthCase(f"S{i:02d}", lesions))


def test_random_channel_drop_rules():
    rng = np.random.default_rng(0)
    counts = np.zeros(len(CHANNELS))
    dce_split = 0
    for _ in range(2000):
        image = np.ones((len(CHANNELS), 2, 2, 2), np.float32)
        image, dropped = random_channel_drop(image, CHANNELS, rng, p=0.075)
        zero = [c for i, c in enumerate(CHANNELS) if not image[i].any()]
        assert sorted(zero) == sorted(dropped)  # dropped channels are all-zero, the others untouched
        counts += [c in dropped for c in CHANNELS]
        dce_split += len({c for c in dropped if c.startswith("DCE")}) not in (0, 3)
    freq = dict(zip(CHANNELS, counts / 2000))
    assert freq["T2"] == freq["PROSTATE"] == freq["CG"] == freq["PZ"] == 0.0
    assert dce_split == 0 and freq["DCE_T10"] == freq["DCE_T20"] == freq["DCE_T30"]
    for name in ("DWI_LOW", "DWI_HIGH", "ADC", "KTRANS", "DCE_T10"):
        assert 0.05 < freq[name] < 0.10, (name, freq[name])


def test_boxes_and_anchor_matching():
    lab = np.zeros((32, 32, 8), np.int16)
    lab[10:15, 4:9, 2:5] = 1
    boxes, classes = boxes_from_labels(lab, {1: 2})
    assert boxes.tolist() == [[9, 3, 15, 9, 1, 5]] and classes.tolist() == [3]  # widened by 1, class = GGG + 1
    _, unknown = boxes_from_labels(lab, {1: None})
    assert unknown.tolist() == [UNKNOWN_CLASS]
    match, gt_index = match_anchors(anchors_tensor(CFG), boxes, classes, CFG, np.random.default_rng(0))
    assert 1 <= int((match > 0).sum()) <= 3  # at most rpn_train_anchors_per_image // 2 positives
    assert int((match == -1).sum()) > 0.9 * len(match)


def test_unlabeled_cases_train_boxes_and_segmentation_but_not_classification():
    torch.manual_seed(0)
    net = RetinaUNet(CFG).eval()  # running BatchNorm statistics: a batch of one 32x32x8 crop is fine
    anchors = anchors_tensor(CFG)
    rng = np.random.default_rng(1)
    case = synthetic_case(0, rng, classify=False)
    boxes, classes = boxes_from_labels(case.labels, case.lesion_ggg)
    match, gt_index = match_anchors(anchors, boxes, classes, CFG, rng)
    assert (match == UNKNOWN_CLASS).any() and not (match > 0).any()
    out = net(torch.from_numpy(case.image)[None])
    target = {"match": match, "gt_index": gt_index, "gt_boxes": boxes, "classify": False}
    loss, parts = total_loss(out, [target], anchors, CFG, torch.from_numpy(case.labels[None] > 0), rng)
    loss.backward()
    assert parts["class"] == 0.0 and parts["box"] > 0 and parts["seg"] > 0
    assert all(p.grad is None or not p.grad.any() for p in net.classifier.parameters())
    assert net.box_regressor.final.bias.grad.abs().sum() > 0
    net.zero_grad()
    labelled = dict(target, classify=True, match=torch.where(match == UNKNOWN_CLASS, 3, match))
    loss, parts = total_loss(net(torch.from_numpy(case.image)[None]), [labelled], anchors, CFG,
                             torch.from_numpy(case.labels[None] > 0), rng)
    loss.backward()
    assert parts["class"] > 0 and net.classifier.final.bias.grad.abs().sum() > 0


def test_cyclic_learning_rate_between_paper_bounds():
    settings = training_settings({"lr_half_cycle_batches": 10, "lr_gamma": 0.99})
    opt, sched = make_optimizer(torch.nn.Linear(2, 2), settings)
    lrs = []
    for _ in range(200):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    lrs = np.array(lrs)
    assert lrs.min() >= 8e-5 - 1e-12 and lrs.max() <= 3.5e-4 + 1e-12
    peaks = [lrs[i] for i in range(1, 199) if lrs[i] > lrs[i - 1] and lrs[i] >= lrs[i + 1]]
    assert len(peaks) >= 5 and all(b < a for a, b in zip(peaks, peaks[1:]))  # triangular, decaying amplitude


def test_short_cross_validation_writes_a_package(tmp_path):
    torch.set_num_threads(1)
    rng = np.random.default_rng(2)
    cases = [synthetic_case(i, rng) for i in range(6)] + [synthetic_case(6, rng, classify=False)]
    split = make_split([c.case_id for c in cases], 2, 0, unlabeled=["S06"])
    assert "S06" not in split["folds"][0] + split["folds"][1]
    settings = training_settings({"batch_size": 2, "batches_per_epoch": 2, "epochs": 3, "n_folds": 2,
                                  "save_n_models": 2, "aug_elastic_p": 0.5})
    card = {"name": "tiny", "version": "0", "intended_use": "test", "crop_size": [32, 32, 8], "spacing": [1, 1, 3]}
    # one fold first (as one job of several would): its package holds fold 1 only, its training stays
    one = cross_validate(cases, split, tmp_path / "pkg", CFG, CHANNELS, settings, card, folds=[1])
    assert {m["fold"] for m in one.card["ensemble"]["members"]} == {1}
    fold1 = tmp_path / ".pkg.training" / "fold_1"
    assert len(list(fold1.glob("epoch_*.pt"))) == 2
    # then all folds: fold 1 is reused, not trained again; the one-fold package is replaced
    said = []
    pkg = cross_validate(cases, split, tmp_path / "pkg", CFG, CHANNELS, settings, card,
                         progress=lambda f, msg: said.append(msg), overwrite=True)
    assert any(m.startswith("fold 1: reusing") for m in said) and not any(m.startswith("fold 0: reusing") for m in said)
    assert not any(m.startswith("fold 1 epoch") for m in said)
    pkg = load_model_package(tmp_path / "pkg")
    assert {m["file"] for m in pkg.card["ensemble"]["members"] if m["fold"] == 1} == \
        {m["file"] for m in one.card["ensemble"]["members"]}
    members = pkg.card["ensemble"]["members"]
    assert sorted((m["fold"], m["rank"]) for m in members) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert (tmp_path / "pkg" / "training_fold0.png").stat().st_size > 1000
    history = json.loads((tmp_path / "pkg" / "history_fold1.json").read_text())
    assert len(history) == 3 and all("mAP" in h and "AP_GGG3" in h for h in history)
    assert pkg.card["training"]["split"]["unlabeled"] == ["S06"]
    assert pkg.card["channel_drop"]["trained_with"] is True
    assert not (tmp_path / ".pkg.training").exists()
    # a second run of the same network joins the ensemble; thresholds come from the merged ensemble
    shutil.copytree(tmp_path / "pkg", tmp_path / "run2")
    run2 = load_model_package(tmp_path / "run2")
    merged = merge_detectors([pkg, run2], tmp_path / "merged", cases, "7 test cases", card={"name": "tiny-merged"})
    assert merged.name == "tiny-merged" and len(merged.card["ensemble"]["members"]) == 8
    assert [m["run"] for m in merged.card["ensemble"]["members"]] == [0] * 4 + [1] * 4
    for m, src in zip(merged.card["ensemble"]["members"], members + members):
        assert (merged.root / m["file"]).read_bytes() == (pkg.root / src["file"]).read_bytes()
    assert [r["name"] for r in merged.card["training"]["merged_runs"]] == ["tiny", "tiny"]
    assert (merged.root / "run1_history_fold0.json").read_bytes() == (pkg.root / "history_fold0.json").read_bytes()
    assert merged.card["validation"]["GGG>=1"]["n_lesions"] >= 6
    assert all(t["computed_on"] == "7 test cases" for t in merged.card["thresholds"].values())
    # a run with other channels cannot be averaged in: one sentence, nothing written
    card = json.loads((tmp_path / "run2" / "model.json").read_text())
    (tmp_path / "run2" / "model.json").write_text(json.dumps(dict(card, channels=CHANNELS[:-1])))
    with pytest.raises(ParameterError, match="channels differ"):
        merge_detectors([pkg, load_model_package(tmp_path / "run2")], tmp_path / "bad", cases, "x")
    mdt = dict(card, ensemble=dict(card["ensemble"], wbc_fold_pooling="mdt"))  # pools members by fold
    (tmp_path / "run2" / "model.json").write_text(json.dumps(mdt))
    with pytest.raises(ParameterError, match="per-member box clustering"):
        merge_detectors([pkg, load_model_package(tmp_path / "run2")], tmp_path / "bad", cases, "x")
    assert not (tmp_path / "bad").exists()


def test_train_detector_cli_on_preprocessed_phantoms(tmp_path, capsys):
    """The command's config file sets channels, crop, spacing, network and training; the split file
    is written on first use; bad options are one sentence and exit status 2."""
    from ProstateLesionCADLib import cli

    torch.set_num_threads(1)
    assert cli.main(["phantoms", "--n", "3", "--seed", "5", "--out", str(tmp_path / "cases"), "--size", "64",
                     "--slices", "16", "--no-dce", "--no-ktrans"]) == 0
    ids = sorted(p.name for p in (tmp_path / "cases").iterdir() if p.is_dir())
    for case_id in ids:
        assert cli.main(["preprocess", str(tmp_path / "cases" / case_id), "--out", str(tmp_path / "data" / case_id)]) == 0
    config = {"network": {"start_filts": 2, "n_blocks": [1, 1, 1, 1], "n_rpn_features": 4,
                          "rpn_train_anchors_per_image": 8},
              "training": {"batch_size": 2, "batches_per_epoch": 1, "epochs": 1, "n_folds": 2, "save_n_models": 1,
                           "aug_elastic_p": 0.0},
              "channels": ["T2", "ADC", "PROSTATE"], "crop_size": [32, 64, 8], "spacing": [2.0, 1.0, 3.0],
              "name": "tiny-cli", "version": "3"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    truth = tmp_path / "cases" / "ground-truth.json"
    base = ["train", "detector", "--data", str(tmp_path / "data"), "--ground-truth", str(truth),
            "--split", str(tmp_path / "split.json"), "--device", "cpu"]
    assert cli.main(base + ["--config", str(tmp_path / "config.json"), "--folds", "1", "--out", str(tmp_path / "pkg")]) == 0
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["format"] == "prostate-cad-split/1" and sorted(sum(split["folds"], [])) == ids
    pkg = load_model_package(tmp_path / "pkg")
    assert (pkg.name, pkg.version, pkg.task) == ("tiny-cli", "3", "detector")
    assert pkg.card["channels"] == ["T2", "ADC", "PROSTATE"]
    assert pkg.card["crop_size"] == [32, 64, 8] and pkg.card["spacing"] == [2.0, 1.0, 3.0]
    assert pkg.card["training_data"] == f"3 cases from {tmp_path / 'data'} ({truth})"
    network = pkg.card["architecture"]["config"]
    assert network["n_channels"] == 3 and network["patch_size"] == [64, 32, 8] and network["start_filts"] == 2
    assert {m["fold"] for m in pkg.card["ensemble"]["members"]} == {1}
    capsys.readouterr()
    (tmp_path / "list.json").write_text("[1, 2]")
    for bad, message in ((["--config", str(tmp_path / "missing.json")], "training config not found"),
                         (["--config", str(tmp_path / "list.json")], "expected a JSON object"),
                         (["--folds", "first"], "--folds must be comma-separated")):
        assert cli.main(base + bad + ["--out", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rng = np.random.default_rng(3)
        cases = [synthetic_case(i, rng) for i in range(4)]
        settings = training_settings({"batch_size": 2, "batches_per_epoch": 2, "epochs": 1, "save_n_models": 1,
                                      "aug_elastic_p": 0.0})
        from pathlib import Path
        res = train_fold(0, cases[:3], cases[3:], CFG, CHANNELS, settings, Path(out_dir) / f"rank{rank}",
                         torch.device("cpu"))
        # DDP keeps the replicas identical: rank 1 stores its weights for comparison
        net_file = Path(out_dir) / f"rank{rank}" / "fold_0" / ("epoch_%d.pt" % res.ranking[0][0] if rank == 0 else "last.pt")
        if rank == 1:
            torch.save({"n_history": len(res.history)}, net_file)
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_two_cpu_processes_with_gloo(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    saved = list((tmp_path / "rank0" / "fold_0").glob("epoch_*.pt"))
    assert len(saved) == 1 and (tmp_path / "rank0" / "fold_0" / "training.png").is_file()
    assert not list((tmp_path / "rank1" / "fold_0").glob("epoch_*.pt"))  # only rank 0 validates and saves
    assert torch.load(tmp_path / "rank1" / "fold_0" / "last.pt")["n_history"] == 1
