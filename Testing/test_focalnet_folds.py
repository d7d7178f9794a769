"""`train focalnet --folds K` (Cao et al. 2019, Sec. II-E1: 5-fold cross-validation) really trains
a tiny FocalNet per fold on phantoms; the package's working points are those of the out-of-fold
predictions, its members are averaged at inference, and `detect` writes only the detections at
or above the working point unless `--all`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ProstateLesionCADLib import cli
from ProstateLesionCADLib.detection.focalnet.inference import FocalNetModel, predict_stack
from ProstateLesionCADLib.detection.focalnet.package import held_out_detections
from ProstateLesionCADLib.detection.focalnet.phantom_data import phantom_cases
from ProstateLesionCADLib.detection.focalnet.training import load_weights
from ProstateLesionCADLib.evaluation.thresholds import lesion_working_points
from ProstateLesionCADLib.models.package import find_model, load_model_package
from ProstateLesionCADLib.phantoms.generate import make_phantom, write_phantom

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# seeds 7000..7004 hold GGG 3 | 2, 2 | 0 | 3 | 3, 1 lesions: every criterion has positives and negatives
SEEDS = range(7000, 7005)
TINY = ["--steps", "20", "--batch-size", "4", "--width", "4", "--blocks", "1,1,1", "--size", "32", "--patch", "16",
        "--loss", "fl", "--device", "cpu", "--prostate-margin-mm", "5"]


@pytest.fixture(scope="module")
def folds_package(tmp_path_factory):
    out = tmp_path_factory.mktemp("focalnet") / "cv"
    rc = cli.main(["train", "focalnet", "--phantoms", str(len(SEEDS)), "--phantom-seed", str(SEEDS.start),
                   "--folds", "5", "--out", str(out), *TINY])
    assert rc == 0
    return load_model_package(out)


def test_folds_package_holds_one_network_per_fold_and_out_of_fold_working_points(folds_package):
    card = folds_package.card
    members = card["ensemble"]["members"]
    assert [m["fold"] for m in members] == [0, 1, 2, 3, 4]
    assert {m["file"] for m in members} == {f["path"] for f in card["files"]}
    split = card["training"]["split"]["folds"]
    assert sorted(c for fold in split for c in fold) == [f"Phantom-{s}" for s in SEEDS]
    # recompute: each fold's network on the cases it left out, then the shared working-point rule
    cases = {c.truth.case_id: c for c in phantom_cases(SEEDS, 32)}
    predictions = []
    for member, held in zip(members, split):
        net = load_weights(folds_package.file(member["file"]))
        predictions += held_out_detections(net, [cases[c] for c in held], "cpu", 5.0)
    computed_on = card["validation"]["computed_on"]
    assert "out-of-fold" in computed_on
    expected, _ = lesion_working_points([(c.truth, d) for c, d in predictions], computed_on)
    assert set(expected) == {"GGG>=1", "GGG>=2", "GGG>=3"}
    assert card["thresholds"] == expected
    # the paper's FROC protocol on the same out-of-fold predictions, for the card
    assert "index lesion" in card["validation"]["froc_focalnet_protocol"]
    spread = card["validation"]["froc_focalnet_protocol_folds"]["all lesions (GGG>=1)"]
    per_fold = spread["sensitivity_at_1_fp_per_fold"]
    benign_fold = next(i for i, ids in enumerate(split) if "Phantom-7002" in ids)  # its one case is benign only
    assert len(per_fold) == 5 and per_fold[benign_fold] is None
    assert spread["mean"] == pytest.approx(np.mean([v for v in per_fold if v is not None]))
    # inference averages the fold networks
    model = FocalNetModel.from_package(folds_package)
    assert len(model.members) == 5
    stack = cases["Phantom-7004"].stack
    alone = [predict_stack(load_weights(folds_package.file(m["file"])), stack, "cpu") for m in members]
    np.testing.assert_allclose(model.predict(stack, "cpu"), np.mean(alone, axis=0), atol=1e-6)


def test_folds_refused_when_too_few_cases(tmp_path, capsys):
    rc = cli.main(["train", "focalnet", "--phantoms", "3", "--folds", "5", "--out", str(tmp_path / "x"), *TINY])
    assert rc == 2 and "--folds 5 needs at least 5 phantoms" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _detect(folder, model, out, *extra):
    assert cli.main(["detect", str(folder), "--model", str(model), "--out", str(out), "--device", "cpu",
                     *extra]) == 0
    return json.loads((out / "detections.json").read_text())["cases"][0]["detections"]


@pytest.mark.parametrize("which", ["demo", "folds"])
def test_detect_writes_the_working_point_detections_and_all_with_all(which, folds_package, tmp_path, capsys):
    pkg = find_model("focalnet-demo", task="focalnet") if which == "demo" else folds_package
    folder = write_phantom(make_phantom(9101, with_dce=False, with_ktrans=False), tmp_path / "case")
    threshold = pkg.card["thresholds"]["GGG>=1"]["max_sensitivity"]
    kept = _detect(folder, pkg.root, tmp_path / "default")
    note = capsys.readouterr().err
    every = _detect(folder, pkg.root, tmp_path / "all", "--all")
    assert all(d["score"] > threshold - 1e-4 for d in kept)
    assert sorted(d["score"] for d in kept) == sorted(d["score"] for d in every if d["score"] > threshold - 1e-4)
    assert len(every) > len(kept)
    assert f"{len(kept)} of {len(every)} local maxima at or above the working point (GGG>=1 max_sensitivity" in note
