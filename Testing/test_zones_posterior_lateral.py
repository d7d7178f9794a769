"""The posterior-lateral PZ step (zones.postprocess.posterior_lateral_pz): "PZ" voxels deep inside
the gland (by default) or in front of the CG (with an anterior band) go to the central gland, the
CG stays one body, the gland never changes, and the answer does not depend on the voxel order
the study is stored in; on held-out phantoms the demo cascade's Dice is not worse with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from ProstateLesionCADLib.cli import main as cli_main
from ProstateLesionCADLib.demo.detector_model import drawable_demo_phantom
from ProstateLesionCADLib.errors import ParameterError
from ProstateLesionCADLib.zones.postprocess import PZ_SHELL_MM, posterior_lateral_pz
from ProstateLesionCADLib.zones.qc import check_zone_split

SPACING = (0.5, 0.5, 3.0)
HELD_OUT_SEED = 9901  # a phantom set the demo zones model was not trained on


def _grid(shape_zyx, spacing=SPACING, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), origin=(-30.0, -30.0, -30.0)):
    img = sitk.Image([int(n) for n in shape_zyx[::-1]], sitk.sitkUInt8)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    img.SetOrigin(origin)
    return img


@pytest.fixture(scope="module")
def gland():
    """An ellipsoid gland (LR 56, AP 40, SI 42 mm) on a canonical (LPS) 0.5 × 0.5 × 3 mm grid with a
    CG in its anterior-central part and, as a network misreads them, a PZ patch in the anterior
    midline (open to the anterior surface) and a PZ tongue reaching from the posterior PZ deep
    into the CG; the anterior-lateral PZ horns are real anatomy and must stay."""
    shape = (18, 120, 140)
    image = _grid(shape)
    z, y, x = np.indices(shape)
    zc, yc, xc = 8.5, 60.0, 70.0
    mm = ((x - xc) * 0.5, (y - yc) * 0.5, (z - zc) * 3.0)  # L, P, S from the centre
    prostate = (mm[0] / 28) ** 2 + (mm[1] / 20) ** 2 + (mm[2] / 21) ** 2 <= 1
    cg = ((mm[0] / 17) ** 2 + ((mm[1] + 6) / 16) ** 2 + ((mm[2] - 3) / 16) ** 2 <= 1) & prostate
    anterior_patch = (np.abs(mm[0]) < 5) & (mm[1] < -12) & (np.abs(mm[2]) < 5) & cg
    tongue = (np.abs(mm[0]) < 2.5) & (mm[1] > 1) & (np.abs(mm[2]) < 2) & cg
    cg = cg & ~anterior_patch & ~tongue
    return image, prostate, cg, anterior_patch, tongue


def _depth(prostate):
    return ndimage.distance_transform_edt(np.pad(prostate, 1), sampling=SPACING[::-1])[1:-1, 1:-1, 1:-1]


def test_anterior_and_deep_pz_go_to_the_central_gland(gland):
    image, prostate, cg, anterior_patch, tongue = gland
    deep = tongue & (_depth(prostate) > PZ_SHELL_MM)
    assert anterior_patch.sum() > 100 and deep.sum() > 20 and (tongue & ~deep).sum() > 20
    default = posterior_lateral_pz(cg, prostate, image)  # shell only: the anterior patch stays PZ
    assert default[deep].all() and not default[anterior_patch].any()
    assert np.array_equal(default, cg | deep)
    out = posterior_lateral_pz(cg, prostate, image, anterior_band=0.5)
    assert out[anterior_patch].all() and out[deep].all()
    assert not out[tongue & ~deep].any()  # the tongue's part within the shell is left as it is
    assert (out | prostate).sum() == prostate.sum()  # CG inside the gland, the gland untouched
    pz_before, pz_after = prostate & ~cg, prostate & ~out
    assert not (pz_after & ~pz_before).any()  # nothing becomes PZ
    # the PZ that lies behind the centroid plane, and the lateral horns in front of it, stay PZ
    posterior = np.indices(prostate.shape)[1] > 60
    assert pz_after[posterior & pz_before & ~deep].all()
    lateral_horn = pz_before & ~posterior & (np.abs(np.indices(prostate.shape)[2] - 70) > 0.6 * 56)
    assert lateral_horn.sum() > 100 and pz_after[lateral_horn].all()
    labels, count = ndimage.label(out, np.ones((3, 3, 3), bool))
    assert count == 1


def test_deep_pz_follows_the_shell_thickness(gland):
    image, prostate, cg, _, tongue = gland
    depth = _depth(prostate)
    assert depth[tongue].max() < 25.0
    assert not posterior_lateral_pz(cg, prostate, image, shell_mm=25.0, anterior_band=0.0)[tongue].any()
    out = posterior_lateral_pz(cg, prostate, image, shell_mm=12.0, anterior_band=0.0)
    assert np.array_equal(out[tongue], depth[tongue] > 12.0)


def test_flipped_and_permuted_copies_give_the_same_zones(gland):
    """The same physical label maps stored with the rows reversed (y axis pointing anterior) and
    with the slice order reversed and x/y swapped: the result, mapped back, is identical."""
    image, prostate, cg, _, _ = gland
    reference = posterior_lateral_pz(cg, prostate, image, anterior_band=0.5)
    # rows reversed: index y now runs anterior; the origin moves to the old last row
    flip = _grid(prostate.shape, direction=(1, 0, 0, 0, -1, 0, 0, 0, 1),
                 origin=image.TransformIndexToPhysicalPoint((0, prostate.shape[1] - 1, 0)))
    out = posterior_lateral_pz(cg[:, ::-1, :], prostate[:, ::-1, :], flip, anterior_band=0.5)
    assert np.array_equal(out[:, ::-1, :], reference)
    # the physical anterior half of the flipped copy is what moved: reading the array as if it
    # were canonical would have moved the posterior PZ instead
    wrong = posterior_lateral_pz(cg[:, ::-1, :], prostate[:, ::-1, :], image, anterior_band=0.5)
    assert not np.array_equal(wrong[:, ::-1, :], reference)
    # feet-first slices and x/y swapped (direction columns permuted to match)
    perm = np.transpose(prostate[::-1], (0, 2, 1)), np.transpose(cg[::-1], (0, 2, 1))
    sp = (SPACING[1], SPACING[0], SPACING[2])
    swapped = _grid(perm[0].shape, spacing=sp, direction=(0, 1, 0, 1, 0, 0, 0, 0, -1),
                    origin=image.TransformIndexToPhysicalPoint((0, 0, prostate.shape[0] - 1)))
    out = posterior_lateral_pz(perm[1], perm[0], swapped, anterior_band=0.5)
    assert np.array_equal(np.transpose(out, (0, 2, 1))[::-1], reference)


def test_true_phantom_zones_are_respected():
    """A phantom's true zones are anatomy: the default step leaves them exactly as they are; an
    anterior band of 0.5 takes at most 2% of the PZ (the thin layer the phantoms draw in front of
    the CG near the apex) and the split QC stays clean."""
    zones = drawable_demo_phantom(9001, with_dce=False, with_ktrans=False).case.zones
    z = sitk.GetArrayFromImage(zones)
    assert np.array_equal(posterior_lateral_pz(z == 1, z > 0, zones), z == 1)
    out = posterior_lateral_pz(z == 1, z > 0, zones, anterior_band=0.5)
    assert not (~out & (z == 1)).any() and 0 < (out & (z == 2)).sum() < 0.02 * (z == 2).sum()
    after = np.where(out, 1, z)
    qc = check_zone_split(_like(after, zones))
    assert qc["flags"] == [] and qc["cg_components"] == 1


def test_bad_settings_are_refused(gland):
    image, prostate, cg, _, _ = gland
    for shell, band in ((0.0, 0.0), (float("nan"), 0.0), (float("inf"), 0.0), (16.0, -0.1)):
        with pytest.raises(ParameterError, match="PZ shell"):
            posterior_lateral_pz(cg, prostate, image, shell_mm=shell, anterior_band=band)


@pytest.mark.slow
def test_held_out_phantom_dice_is_not_worse():
    """The demo cascade on held-out phantoms (a set it never saw, as test_zones_cascade): CG and PZ
    Dice with the step (as run_cascade applies it by default) at least as high as without it."""
    from ProstateLesionCADLib.demo.zones_model import DEMO_TRAIN_SEED
    from ProstateLesionCADLib.phantoms.generate import case_seed, make_phantom
    from ProstateLesionCADLib.zones.cascade import load_cascade, run_cascade
    from ProstateLesionCADLib.zones.postprocess import dice

    assert HELD_OUT_SEED != DEMO_TRAIN_SEED
    nets = load_cascade()
    before, after = {"cg": [], "pz": []}, {"cg": [], "pz": []}
    for i in range(4):
        ph = make_phantom(case_seed(HELD_OUT_SEED, i), with_dce=False, with_ktrans=False)
        truth = sitk.GetArrayFromImage(ph.case.zones)
        raw = run_cascade(nets, ph.case.t2, pz_shell_mm=None)
        cg = posterior_lateral_pz(raw.cg, raw.prostate, ph.case.t2)
        if i == 0:  # the cascade applies exactly this step by default
            assert np.array_equal(run_cascade(nets, ph.case.t2).cg, cg)
        for scores, c in ((before, raw.cg), (after, cg)):
            scores["cg"].append(dice(c, truth == 1))
            scores["pz"].append(dice(raw.prostate & ~c, truth == 2))
    print(f"held-out phantom Dice without / with the step: {before} / {after}")
    assert np.mean(after["cg"]) >= np.mean(before["cg"]) and np.mean(after["pz"]) >= np.mean(before["pz"])


def test_zones_cli_settings_and_report(tmp_path, capsys):
    phantom = drawable_demo_phantom(9002, with_dce=False, with_ktrans=False)
    t2_file = tmp_path / "t2.nrrd"
    sitk.WriteImage(phantom.case.t2, str(t2_file))
    for bad, words in ((["--pz-shell-mm", "thick"], "--pz-shell-mm"), (["--pz-shell-mm", "-3"], "--pz-shell-mm"),
                       (["--pz-anterior-band", "-1"], "anterior band")):
        assert cli_main(["zones", str(t2_file), "--out", str(tmp_path / "bad"), "--backend", "cascade", *bad]) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert cli_main(["zones", str(t2_file), "--out", str(tmp_path / "off"), "--backend", "cascade",
                     "--pz-shell-mm", "off"]) == 0
    assert json.loads((tmp_path / "off" / "zones.json").read_text())["postprocessing"] == {
        "one_piece_cg": True, "posterior_lateral_pz": None}
    assert cli_main(["zones", str(t2_file), "--out", str(tmp_path / "on"), "--backend", "cascade",
                     "--pz-shell-mm", "12", "--pz-anterior-band", "0.5"]) == 0
    report = json.loads((tmp_path / "on" / "zones.json").read_text())
    assert report["postprocessing"]["posterior_lateral_pz"] == {"shell_mm": 12.0, "anterior_band": 0.5}
    off = sitk.ReadImage(str(tmp_path / "off" / "zones.nrrd"))
    z_off, z_on = sitk.GetArrayFromImage(off), sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "on" / "zones.nrrd")))
    expected = posterior_lateral_pz(z_off == 1, z_off > 0, off, shell_mm=12.0, anterior_band=0.5)
    assert np.array_equal(z_on == 1, expected) and np.array_equal(z_on > 0, z_off > 0)


def _like(arr, ref):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.CopyInformation(ref)
    return img
