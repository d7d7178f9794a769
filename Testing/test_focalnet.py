"""FocalNet unit tests (Cao et al. 2019): ordinal encoding, focal weight, losses, MFL gradient path,
local maxima, and `prostate-cad train focalnet` with tiny settings. The trained-model tests live
in test_focalnet_model.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ProstateLesionCADLib.detection.focalnet import ordinal
from ProstateLesionCADLib.detection.focalnet.losses import (cross_entropy_loss, focal_weight, focalnet_loss,
                                                  mutual_finding_loss, ordinal_focal_loss)



# one torch thread: the cores are shared, and oversubscribed OpenMP threads crawl
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ---------------------------------------------------------------- ordinal encoding (Table I)

TABLE_I = {0: "00000", 1: "10000", 2: "11000", 3: "11100", 4: "11110", 5: "11111"}


def test_encoding_is_table_one():
    bits = ordinal.encode(np.arange(6))
    assert bits.shape == (5, 6)
    for k, code in TABLE_I.items():
        assert "".join(str(b) for b in bits[:, k]) == code


def test_decoding_highest_k_with_all_first_bits_on():
    assert list(ordinal.decode(ordinal.encode(np.arange(6)))) == [0, 1, 2, 3, 4, 5]
    # a hole stops the count: 1 1 0 1 1 is class 2; 0 1 1 1 1 is non-lesion
    assert ordinal.decode(np.array([1, 1, 0, 1, 1])) == 2
    assert ordinal.decode(np.array([0, 1, 1, 1, 1])) == 0
    prob = np.array([0.9, 0.6, 0.4, 0.7, 0.1])[:, None, None]
    assert ordinal.decode_probabilities(prob)[0, 0] == 2


def test_encoding_keeps_spatial_shape_and_rejects_bad_classes():
    labels = np.array([[0, 3], [5, 1]])
    bits = ordinal.encode(labels)
    assert bits.shape == (5, 2, 2) and bits[:, 1, 0].sum() == 5 and bits[:, 0, 0].sum() == 0
    with pytest.raises(ValueError):
        ordinal.encode(np.array([6]))


def test_ggg_mapping():
    assert [ordinal.class_to_ggg(k) for k in range(6)] == [0, 1, 2, 3, 3, 3]
    assert [ordinal.ggg_to_class(g) for g in range(4)] == [0, 1, 2, 3]  # GGG0 benign = non-lesion
    scores = ordinal.ggg_class_scores([0.9, 0.7, 0.2, 0.1, 0.0])
    assert scores == pytest.approx({"0": 0.1, "1": 0.2, "2": 0.5, "3": 0.2})
    assert sum(ordinal.ggg_class_scores([0.3, 0.8, 0.1, 0.0, 0.0]).values()) == pytest.approx(1.0)
    assert min(ordinal.ggg_class_scores([0.3, 0.8, 0.1, 0.0, 0.0]).values()) >= 0.0


# ---------------------------------------------------------------- focal loss (Eq. 1-2)

def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def test_paper_worked_example_non_lesion_pixel():
    """A clear non-lesion pixel predicted 0.95 non-lesion: 0.022 to CE, 5.6e-5 to FL (Sec. II-C2).
    The paper's numbers use base-10 logarithms and no alpha; ours use natural logarithms."""
    logits = torch.full((1, 1, 1, 1), _logit(0.05))
    target = torch.zeros((1, 1, 1, 1))
    ce = float(cross_entropy_loss(logits, target))
    fl = float(ordinal_focal_loss(logits, target, alpha=0.5, pool=1, reduction="none")) / 0.5  # undo (1 - alpha)
    assert ce / math.log(10) == pytest.approx(0.0223, abs=5e-5)
    assert fl / math.log(10) == pytest.approx(5.6e-5, rel=0.01)
    assert fl / ce == pytest.approx(0.05 ** 2)
    # the alpha = 0.75 weighting then scales a negative bit by 0.25 and a positive one by 0.75
    fl75 = float(ordinal_focal_loss(logits, target, pool=1, reduction="none"))
    assert fl75 == pytest.approx(0.25 * fl, rel=1e-5)
    pos = float(ordinal_focal_loss(torch.full((1, 1, 1, 1), _logit(0.95)), torch.ones((1, 1, 1, 1)), pool=1,
                                   reduction="none"))
    assert pos == pytest.approx(0.75 * fl, rel=1e-5)


def test_focal_weight_is_max_margin_over_channels_then_3x3_max_pool():
    prob = torch.full((1, 5, 5, 5), 0.1)
    target = torch.zeros((1, 5, 5, 5))
    target[0, :3, 2, 2] = 1.0  # a GS 4+3 pixel in the middle ...
    prob[0, :, 2, 2] = torch.tensor([0.9, 0.8, 0.3, 0.2, 0.1])  # ... predicted GS 3+4 (downgraded)
    q = focal_weight(prob, target, pool=1)[0, 0]
    assert float(q[2, 2]) == pytest.approx(0.7 ** 2)  # the missed third bit dominates
    assert float(q[0, 0]) == pytest.approx(0.01)
    pooled = focal_weight(prob, target)[0, 0]
    assert torch.allclose(pooled[1:4, 1:4], torch.full((3, 3), 0.49))  # spreads to the 3x3 neighbourhood
    assert float(pooled[0, 0]) == pytest.approx(0.01) and float(pooled[4, 4]) == pytest.approx(0.01)


def test_ordinal_focal_loss_matches_equation_one():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 6)
    target = torch.from_numpy(ordinal.encode(np.random.default_rng(0).integers(0, 6, size=(2, 6, 6)))).permute(1, 0, 2, 3).float()
    p = torch.sigmoid(logits).double()
    y = target.double()
    per_channel = -0.75 * y * torch.log(p) - 0.25 * (1 - y) * torch.log(1 - p)
    q = torch.nn.functional.max_pool2d((y * (1 - p) ** 2 + (1 - y) * p ** 2).amax(1, keepdim=True), 3, 1, 1)
    expected = (q * per_channel.sum(1, keepdim=True)).mean()
    assert float(ordinal_focal_loss(logits, target)) == pytest.approx(float(expected), rel=1e-5)


# ---------------------------------------------------------------- mutual finding loss (Eq. 3-4)

class _PixelNet(torch.nn.Module):
    """A 1x1-conv network: easy to reason about, enough to test which passes get gradients."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 5, 1)

    def forward(self, x):
        return self.conv(x)


def test_mfl_picks_the_closer_component_and_only_on_the_lesion_mask():
    net = _PixelNet()
    with torch.no_grad():
        net.conv.weight.zero_()
        net.conv.bias.zero_()
        net.conv.weight[:, 0] = 4.0  # output driven by channel 0 only (T2): blanking ADC changes nothing
        net.conv.weight[:, 1] = 0.0
    x = torch.rand(1, 2, 4, 4) + 0.5
    target = torch.zeros(1, 5, 4, 4)
    target[0, 0, 1, 1] = 1.0
    f_out = torch.sigmoid(net(x))
    mfl = mutual_finding_loss(net, x, target, f_out)
    assert float(mfl.detach()) == pytest.approx(0.0, abs=1e-12)  # T2-only output equals the full output
    # outside the lesion mask nothing counts, whatever the outputs
    assert float(mutual_finding_loss(net, x, torch.zeros_like(target), torch.zeros_like(f_out)).detach()) == 0.0
    # against a reference of 0.5 on the lesion pixel: min over the two passes, divided by N = 16
    ref = torch.full_like(f_out, 0.5)
    t2_only = torch.sigmoid(net(torch.cat([x[:, :1], torch.zeros_like(x[:, 1:])], 1)))[0, 0, 1, 1]
    adc_only = torch.sigmoid(net(torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:]], 1)))[0, 0, 1, 1]
    expected = min((0.5 - float(t2_only.detach())) ** 2, (0.5 - float(adc_only.detach())) ** 2) / 16
    assert float(mutual_finding_loss(net, x, target, ref).detach()) == pytest.approx(expected)


def test_mfl_sends_no_gradient_into_the_full_input_output():
    torch.manual_seed(1)
    net = _PixelNet()
    x = torch.rand(2, 2, 4, 4)
    target = torch.zeros(2, 5, 4, 4)
    target[:, :2, 1:3, 1:3] = 1.0
    f_out = torch.sigmoid(net(x))
    f_out.retain_grad()
    mfl = mutual_finding_loss(net, x, target, f_out)
    mfl.backward()
    assert f_out.grad is None  # the reference was detached: nothing flows back through f_out
    assert net.conv.weight.grad is not None and float(net.conv.weight.grad.abs().sum()) > 0


def test_combined_loss_kinds():
    torch.manual_seed(2)
    net = _PixelNet()
    x = torch.rand(2, 2, 8, 8)
    target = torch.zeros(2, 5, 8, 8)
    target[:, :1, 2:5, 2:5] = 1.0
    ce, _ = focalnet_loss(net, x, target, kind="ce")
    fl, parts_fl = focalnet_loss(net, x, target, kind="fl")
    both, parts = focalnet_loss(net, x, target, kind="fl+mfl", lam=50.0)
    assert float(both.detach()) == pytest.approx(parts["fl"] + 50.0 * parts["mfl"], rel=1e-5)
    assert parts["fl"] == pytest.approx(parts_fl["fl"]) and float(ce.detach()) > float(fl.detach()) > 0
    with pytest.raises(ValueError):
        focalnet_loss(net, x, target, kind="fl+mfl")


# ---------------------------------------------------------------- localisation (Sec. II-E2)

def _blob(shape, cy, cx, peak, sigma=2.0):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return peak * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))


def test_local_maxima_per_slice_thresholded():
    from ProstateLesionCADLib.detection.focalnet.inference import local_maxima
    det = np.zeros((4, 32, 32), np.float32)
    det[1] = _blob((32, 32), 10, 12, 0.9) + _blob((32, 32), 22, 24, 0.4)
    det[2] = _blob((32, 32), 10, 13, 0.7)
    det[3] = _blob((32, 32), 5, 5, 0.04)  # below the threshold
    peaks = local_maxima(det, threshold=0.1, min_distance_px=3)
    assert [(p.z, p.y, p.x) for p in peaks] == [(1, 10, 12), (2, 10, 13), (1, 22, 24)]  # sorted by score
    assert [round(p.score, 3) for p in peaks] == [0.9, 0.7, 0.4]
    assert [(p.z, p.y, p.x) for p in local_maxima(det, threshold=0.5, min_distance_px=3)] == [(1, 10, 12), (2, 10, 13)]
    # only the requested slices are searched; a second bump closer than min_distance is suppressed
    det[2] = _blob((32, 32), 10, 13, 0.7, sigma=1.0) + _blob((32, 32), 10, 17, 0.5, sigma=1.0)
    assert [(p.z, p.y, p.x) for p in local_maxima(det, 0.1, 5, slices=np.array([2]))] == [(2, 10, 13)]
    assert [(p.z, p.y, p.x) for p in local_maxima(det, 0.1, 2, slices=np.array([2]))] == [(2, 10, 13), (2, 10, 17)]


def test_detections_carry_lps_centre_ggg_and_class_scores():
    import SimpleITK as sitk

    from ProstateLesionCADLib.detection.focalnet.inference import detections_from_output
    from ProstateLesionCADLib.detection.focalnet.preprocessing import SliceStack, T2Thresholds
    grid = sitk.Image(32, 32, 3, sitk.sitkUInt8)
    grid.SetSpacing((1.25, 1.25, 3.0))
    grid.SetOrigin((-20.0, -10.0, 5.0))
    stack = SliceStack("c", grid, np.zeros((3, 32, 32), np.float32), np.zeros((3, 32, 32), np.float32),
                       T2Thresholds(0.0, 1.0, "bladder"), np.arange(3))
    prob = np.zeros((3, 5, 32, 32), np.float32)
    prob[1, 0] = _blob((32, 32), 8, 4, 0.9)
    prob[1, 1] = _blob((32, 32), 8, 4, 0.8)  # GS 3+4 -> GGG2 at the peak
    prob[2, 0] = _blob((32, 32), 20, 20, 0.3)  # below 0.5 everywhere: still a candidate, GGG1
    dcase = detections_from_output(prob, stack, threshold=0.1, min_distance_mm=5.0)
    assert [d.ggg for d in dcase.detections] == [2, 1]
    assert dcase.detections[0].center_lps == pytest.approx((-20 + 4 * 1.25, -10 + 8 * 1.25, 5 + 3.0))
    assert dcase.detections[0].score == pytest.approx(0.9)
    assert dcase.detections[0].class_scores == pytest.approx({"0": 0.1, "1": 0.1, "2": 0.8, "3": 0.0})
    merged = detections_from_output(np.concatenate([prob[:, :], prob[[1]]], 0)[:3], stack, 0.1, 5.0, merge_mm=100.0)
    assert len(merged.detections) == 1


# ---------------------------------------------------------------- voxel-level ROC (Sec. II-E4)

def test_voxel_roc_samples_twelve_points_and_scores_cumulative_classes():
    import SimpleITK as sitk

    from ProstateLesionCADLib.evaluation.voxel_roc import voxel_roc
    from ProstateLesionCADLib.formats import Detection, DetectionCase, GroundTruthCase, Lesion
    mask = sitk.Image(20, 20, 4, sitk.sitkUInt8)
    arr = np.zeros((4, 20, 20), np.uint8)
    arr[1, 2:6, 2:6] = 1  # GGG3 lesion
    arr[2, 12:16, 12:16] = 2  # GGG1 lesion
    mask = sitk.GetImageFromArray(arr)
    truth = GroundTruthCase("a", [Lesion(1, 3, (3.5, 3.5, 1.0), 1), Lesion(2, 1, (13.5, 13.5, 2.0), 2)])

    def det(i, xyz, score, p2, p3):
        return Detection(i, 2, score, xyz, class_scores={"0": 1 - score, "1": score - p2, "2": p2 - p3, "3": p3})
    dets = [det(1, (3, 3, 1), 0.9, 0.8, 0.6), det(2, (13, 13, 2), 0.8, 0.3, 0.1)]
    dets += [det(3 + i, (18, 1, 3), 0.5 - i * 0.02, 0.2, 0.05) for i in range(15)]  # non-lesion points
    result = voxel_roc([(truth, DetectionCase("a", dets), mask)])
    assert result["n_points"] == 12 and result["n_points_in_lesions"] == 2
    gs7 = result["tasks"]["GS>=7"]
    assert gs7["all_points"]["n_positive"] == 1 and gs7["all_points"]["auc"] == pytest.approx(1.0)
    assert gs7["lesion_points"]["n"] == 2 and gs7["lesion_points"]["auc"] == pytest.approx(1.0)
    assert result["tasks"]["GS>=8"]["criterion"] is None and "does not separate" in result["tasks"]["GS>=8"]["note"]
    # a GGG1 lesion scored higher than the GGG3 one for P(GGG>=3) gives AUC 0 among lesion points
    dets[1] = det(2, (13, 13, 2), 0.8, 0.75, 0.7)
    assert voxel_roc([(truth, DetectionCase("a", dets), mask)])["tasks"]["GS>=4+3"]["lesion_points"]["auc"] == 0.0


# ---------------------------------------------------------------- pre-processing, training, package

@pytest.fixture(scope="module")
def small_phantom():
    from ProstateLesionCADLib.phantoms.generate import make_phantom
    return make_phantom(11, ggg=[3, 1], with_dce=False, with_ktrans=False)


def test_preprocessing_bladder_window_crop_and_targets(small_phantom):
    from ProstateLesionCADLib.detection.focalnet.preprocessing import FOV_MM, prepare_case
    p = small_phantom
    stack = prepare_case(p.case, 48, lesion_mask=p.lesion_mask, lesion_ggg={1: 3, 2: 1})
    # the phantom bladder is 1050 on average (times a smooth bias field); air/gas near 0
    assert stack.thresholds.upper_source == "bladder" and 850 < stack.thresholds.upper < 1350
    assert stack.thresholds.lower < 60
    assert stack.grid.GetSpacing()[0] == pytest.approx(FOV_MM / 48) and stack.t2.shape[1:] == (48, 48)
    x = stack.inputs()
    assert x.shape == (len(stack.slices), 2, 48, 48) and 0.0 <= x.min() and x.max() <= 1.0
    y = stack.targets()
    assert set(np.unique(stack.classes)) == {0, 1, 3}  # GGG3+ lesion -> class 3 (GS 4+3), GGG1 -> class 1
    assert y[:, 2].sum() > 0 and y[:, 3].sum() == 0  # bit 3 (class >= 3) on the GGG3 lesion only
    jittered = stack.inputs(upper_scale=0.85)
    assert jittered[:, 0].mean() > x[:, 0].mean() and np.array_equal(jittered[:, 1], x[:, 1])


def test_training_writes_a_package_that_detects(tmp_path, small_phantom):
    from ProstateLesionCADLib.detection.focalnet.inference import FocalNetModel
    from ProstateLesionCADLib.detection.focalnet.network import FocalNetConfig
    from ProstateLesionCADLib.detection.focalnet.package import model_card, write_package
    from ProstateLesionCADLib.detection.focalnet.preprocessing import prepare_case
    from ProstateLesionCADLib.detection.focalnet.training import TrainSettings, train
    p = small_phantom
    stack = prepare_case(p.case, 32, lesion_mask=p.lesion_mask, lesion_ggg={1: 3, 2: 1})
    settings = TrainSettings(steps=3, batch_size=4, patch=16, network=FocalNetConfig(width=4, aspp_channels=8))
    model, info = train([stack], settings, device="cpu")
    assert 0 < info["positive_bit_ratio"] < 1 and info["lambda"] == pytest.approx(1 / info["positive_bit_ratio"])
    card = model_card(model, info, name="tiny", version="0", size=32, training_data="one phantom",
                      intended_use="test only; synthetic")
    pkg = write_package(tmp_path / "tiny", model, card)
    loaded = FocalNetModel.from_package(pkg)
    dcase, prob, _ = loaded.detect(p.case, device="cpu", threshold=0.0)
    assert prob.shape[1] == 5 and 0.0 <= prob.min() and prob.max() <= 1.0 and dcase.detections
    with pytest.raises(Exception, match="loss"):
        train([stack], TrainSettings(loss="dice"), device="cpu")


def test_train_focalnet_cli_on_phantoms_and_on_cases(tmp_path, capsys):
    """Both data sources of `prostate-cad train focalnet` write a loadable package that says where its data
    and working points come from; bad input is one sentence and exit status 2."""
    from ProstateLesionCADLib import cli
    from ProstateLesionCADLib.models.package import load_model_package

    tiny = ["--steps", "2", "--batch-size", "2", "--size", "32", "--width", "4", "--patch", "16", "--device", "cpu"]
    argv = ["train", "focalnet", "--phantoms", "2", "--validation-phantoms", "1", "--phantom-seed", "5000",
            "--out", str(tmp_path / "phantoms")] + tiny
    assert cli.main(argv) == 0
    assert "Trained FocalNet (fl+mfl, 2 steps" in capsys.readouterr().out
    pkg = load_model_package(tmp_path / "phantoms")
    assert pkg.task == "focalnet" and pkg.name == "phantoms" and pkg.card["input"]["size"] == 32
    settings = pkg.card["training"]["settings"]
    assert pkg.card["architecture"]["width"] == 4 and settings["steps"] == 2 and settings["patch"] == 16
    assert pkg.card["training_data"].startswith("2 synthetic phantoms (seeds 5000..5001")
    assert "synthetic phantoms" in pkg.card["intended_use"] and "not for clinical use" in pkg.card["intended_use"]
    assert all(t["computed_on"] == "1 held-out phantoms (seeds 5002..5002)" for t in pkg.card.get("thresholds", {}).values())

    assert cli.main(["phantoms", "--n", "2", "--seed", "7", "--out", str(tmp_path / "cases"), "--size", "64",
                     "--slices", "16", "--no-dce", "--no-ktrans"]) == 0
    truth = tmp_path / "cases" / "ground-truth.json"
    argv = ["train", "focalnet", "--cases", str(tmp_path / "cases"), "--ground-truth", str(truth),
            "--out", str(tmp_path / "studies"), "--name", "from-cases", "--prostate-margin-mm", "5"] + tiny
    assert cli.main(argv) == 0
    pkg = load_model_package(tmp_path / "studies")
    assert pkg.name == "from-cases" and pkg.card["training_data"] == f"2 cases from {tmp_path / 'cases'} ({truth})"
    assert pkg.card["intended_use"] == "Research only; not a medical device."
    assert pkg.card["localisation"]["prostate_margin_mm"] == 5.0
    assert all(t["computed_on"] == "the training cases (no held-out set)" for t in pkg.card.get("thresholds", {}).values())
    capsys.readouterr()
    for bad, message in ((["--cases", str(tmp_path / "cases")], "needs --ground-truth"),
                         (["--phantoms", "2", "--blocks", "1,x"], "--blocks must be comma-separated integers")):
        assert cli.main(["train", "focalnet", "--out", str(tmp_path / "bad")] + bad + tiny) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_augmentation_flips_shifts_scales_without_rotation():
    from ProstateLesionCADLib.detection.focalnet.training import augment
    x = torch.zeros(1, 2, 16, 16)
    x[0, :, 4, 2] = 1.0
    y = torch.zeros(1, 5, 16, 16)
    y[0, 0, 4, 2] = 1.0
    rng = np.random.default_rng(0)
    flips = 0
    for _ in range(8):
        xa, ya = augment(x, y, rng, max_shift=0.0, scale_range=(1.0, 1.0))
        assert set(np.unique(ya.numpy())) <= {0.0, 1.0}  # labels stay labels (nearest)
        hot = np.argwhere(ya[0, 0].numpy() > 0)
        assert hot.tolist() in ([[4, 2]], [[4, 13]])  # identity or a left-right mirror, same row
        flips += hot.tolist() == [[4, 13]]
    assert 0 < flips < 8
