"""Training throughput and robustness for the Retina U-Net folds and the zonal cascade:
augmented batches made by DataLoader worker processes, history.json after every epoch,
and an interrupted run that resumes to the weights of an uninterrupted one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ProstateLesionCADLib.cli import main as cli_main
from ProstateLesionCADLib.detection.retina_unet.network import make_config
from ProstateLesionCADLib.detection.retina_unet.train_detector import cross_validate
from ProstateLesionCADLib.detection.retina_unet.training import TrainingCase, make_split, train_fold, training_settings
from ProstateLesionCADLib.errors import ParameterError
from ProstateLesionCADLib.formats import GroundTruthCase, Lesion
from ProstateLesionCADLib.models.package import load_model_package
from ProstateLesionCADLib.models.training_runs import resolve_workers
from ProstateLesionCADLib.preprocessing.crop_geometry import CropGeometry, Grid

CHANNELS = ["T2", "ADC", "DWI_HIGH", "PROSTATE"]
CFG = make_config(start_filts=2, n_blocks=[1, 1, 1, 1], n_rpn_features=4, patch_size=[32, 32, 8], n_channels=4,
                  rpn_train_anchors_per_image=8)
GEOMETRY = CropGeometry.around(Grid((32, 32, 8), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
                               (15.5, 15.5, 10.5), "given point", (32, 32, 8), (1.0, 1.0, 3.0))
SETTINGS = training_settings({"batch_size": 2, "batches_per_epoch": 2, "epochs": 2, "n_folds": 2,
                              "save_n_models": 1, "aug_elastic_p": 0.5, "channel_drop_p": 0.2})


class Interrupted(Exception):
    pass


def _stop_after(epoch: int):
    def hook(done: int) -> None:
        if done == epoch:
            raise Interrupted(f"stopped after epoch {done}")
    return hook


def _case(i: int, rng: np.random.Generator) -> TrainingCase:
    """One bright ellipsoid (GGG i % 4) on noise; the prostate channel all ones."""
    img = rng.normal(0, 0.1, (4, 32, 32, 8)).astype(np.float32)
    img[3] = 1.0
    yy, xx, zz = np.mgrid[:32, :32, :8]
    cy, cx, cz, g = int(rng.integers(8, 24)), int(rng.integers(8, 24)), int(rng.integers(2, 6)), i % 4
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2) / 9 + (zz - cz) ** 2 / 1.5 <= 1
    img[:3][:, mask] += 0.5 + 0.5 * g
    centre = tuple(float(v) for v in GEOMETRY.crop_index_to_lps([cx, cy, cz]))
    return TrainingCase(f"T{i:02d}", img, mask.astype(np.int16), {1: g}, True, GEOMETRY,
                        GroundTruthCase(f"T{i:02d}", [Lesion(1, g, centre, 1)]))


@pytest.fixture(scope="module")
def cases():
    rng = np.random.default_rng(11)
    return [_case(i, rng) for i in range(6)]


def _final_weights(fold_dir) -> dict[str, torch.Tensor]:
    return torch.load(fold_dir / "checkpoint.pt", weights_only=True)["net"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.usefixtures("one_torch_thread")
def test_detector_fold_history_resume_and_workers(tmp_path, cases):
    train, val = cases[:4], cases[4:]
    full = train_fold(0, train, val, CFG, CHANNELS, SETTINGS, tmp_path / "full", torch.device("cpu"), workers=0)
    history = json.loads((tmp_path / "full" / "fold_0" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1] == [h["epoch"] for h in full.history]
    for h in history:
        assert h["samples_per_s"] > 0 and h["wall_seconds"] >= h["seconds"] > 0 and 8e-5 <= h["lr"] <= 3.5e-4
        assert all(np.isfinite(h[k]) for k in ("loss", "class", "box", "seg")) and "mAP" in h
    reference = _final_weights(tmp_path / "full" / "fold_0")

    # interrupted after epoch 0: its history and checkpoint are on disk, no result
    fold_dir = tmp_path / "cut" / "fold_0"
    with pytest.raises(Interrupted):
        train_fold(0, train, val, CFG, CHANNELS, SETTINGS, tmp_path / "cut", torch.device("cpu"), workers=0,
                   epoch_done=_stop_after(0))
    assert len(json.loads((fold_dir / "history.json").read_text())) == 1
    assert not (fold_dir / "result.json").exists()
    assert not _same(_final_weights(fold_dir), reference)
    # resumed with two worker processes making the batches: the uninterrupted run's weights
    said = []
    resumed = train_fold(0, train, val, CFG, CHANNELS, SETTINGS, tmp_path / "cut", torch.device("cpu"), workers=2,
                         progress=lambda f, msg: said.append(msg))
    assert any("resuming after epoch 1/2" in m for m in said)
    assert not any(m.startswith("fold 0 epoch 1/2") for m in said)  # epoch 0 is not trained again
    assert _same(_final_weights(fold_dir), reference)
    assert resumed.ranking == full.ranking
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    member = f"epoch_{full.ranking[0][0]}.pt"
    assert _same(torch.load(fold_dir / member, weights_only=True),
                 torch.load(tmp_path / "full" / "fold_0" / member, weights_only=True))

    # a whole run with two workers: the same weights again, and a package that loads and detects
    split = make_split([c.case_id for c in cases], 2, 0)
    card = {"name": "tiny-workers", "version": "0", "intended_use": "test", "crop_size": [32, 32, 8],
            "spacing": [1, 1, 3]}
    with pytest.raises(ParameterError, match="--resume: .* holds no interrupted or finished training"):
        cross_validate(cases, split, tmp_path / "pkg", CFG, CHANNELS, SETTINGS, card, folds=[0], resume=True)
    pkg = cross_validate(cases, split, tmp_path / "pkg", CFG, CHANNELS, SETTINGS, card, folds=[0], workers=2)
    assert len(json.loads((tmp_path / "pkg" / "history_fold0.json").read_text())) == 2
    assert load_model_package(tmp_path / "pkg").card["ensemble"]["members"][0]["fold"] == 0
    assert pkg.card["training"]["epochs"] == 2
    by_worker_count = _final_weights(tmp_path / ".pkg.training" / "fold_0")
    from ProstateLesionCADLib.detection.retina_unet.inference import RetinaUNetDetector
    output = RetinaUNetDetector(pkg, "cpu").predict(cases[4].image)
    assert output is not None
    # the same fold trained in-process (fold 0 of this split has other cases than the run above)
    train_fold(0, [c for c in cases if c.case_id not in split["folds"][0]],
               [c for c in cases if c.case_id in split["folds"][0]], CFG, CHANNELS, SETTINGS,
               tmp_path / "in-process", torch.device("cpu"), workers=0)
    assert _same(_final_weights(tmp_path / "in-process" / "fold_0"), by_worker_count)


def test_workers_option(tmp_path, capsys):
    assert resolve_workers(0) == 0 and resolve_workers("3") == 3 and resolve_workers("auto") >= 0
    for bad in ("-1", "many"):
        with pytest.raises(ParameterError, match="--workers"):
            resolve_workers(bad)
    argv = ["train", "detector", "--data", str(tmp_path), "--ground-truth", str(tmp_path / "gt.json"),
            "--split", str(tmp_path / "split.json"), "--out", str(tmp_path / "pkg"), "--workers", "some"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "--workers must be a number of processes or 'auto'" in err and "Traceback" not in err
    assert not (tmp_path / "pkg").exists() and not (tmp_path / "split.json").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_zones_training_history_resume_and_workers(tmp_path, capsys):
    from ProstateLesionCADLib.demo import zones_model
    from ProstateLesionCADLib.zones import training

    images, labels = zones_model.write_phantom_pairs(3, 4243, tmp_path / "data")
    tiny = {"steps": 4, "batch": 2, "patch": 32, "val_every": 2}
    training.train_zones(images, labels, tmp_path / "full", workers=0, **tiny)
    history = json.loads((tmp_path / "full" / "history.json").read_text())
    assert [(h["epoch"], h["step"]) for h in history] == [(0, 2), (1, 4)]
    assert all(h["samples_per_s"] > 0 and 0 <= h["dice_prostate"] <= 1 and h["lr"] > 0 for h in history)
    assert not (tmp_path / ".full.training").exists()

    with pytest.raises(Interrupted):
        training.train_zones(images, labels, tmp_path / "cut", workers=0, epoch_done=_stop_after(0), **tiny)
    assert not (tmp_path / "cut").exists()
    assert len(json.loads((tmp_path / ".cut.training" / "history.json").read_text())) == 1
    # the command continues it with two worker processes
    argv = ["train", "zones", "--images", *map(str, images), "--labels", *map(str, labels), "--out",
            str(tmp_path / "cut"), "--steps", "4", "--batch", "2", "--patch", "32", "--val-every", "2"]
    assert cli_main(argv + ["--workers", "2", "--resume"]) == 0
    assert "resuming after step 2/4" in capsys.readouterr().err  # a progress note: stderr
    for name in ("cnn1.pt", "cnn2.pt"):
        assert _same(torch.load(tmp_path / "cut" / name, weights_only=True),
                     torch.load(tmp_path / "full" / name, weights_only=True))
    assert [h["loss"] for h in json.loads((tmp_path / "cut" / "history.json").read_text())] == \
        [h["loss"] for h in history]
    # nothing to resume, or a bad worker count: one sentence, exit 2, nothing written
    capsys.readouterr()
    assert cli_main(argv[:-10] + ["--out", str(tmp_path / "none"), "--resume", "--workers", "1"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli_main(argv[:-10] + ["--out", str(tmp_path / "none"), "--workers", "-2"]) == 2
    assert "--workers must be 0 or more" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
