"""The opt-in realistic T2 appearance of the phantoms (phantoms/t2_appearance.py) and the zones
demo recipe's choice of training phantoms (demo/zones_model.py)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import binary_erosion

from ProstateLesionCADLib.errors import ParameterError
from ProstateLesionCADLib.phantoms.generate import make_phantom


def arr(img):
    return sitk.GetArrayFromImage(img).astype(np.float64)


@pytest.fixture(scope="module")
def pair():
    kw = dict(ggg=[3, 3], lesion_zones=["PZ", "PZ"], deformation_mm=2.0)
    return make_phantom(31, **kw), make_phantom(31, appearance="realistic", **kw)


def test_only_the_t2_changes_and_it_is_reproducible(pair):
    default, realistic = pair
    assert not np.array_equal(arr(default.case.t2), arr(realistic.case.t2))
    for x, y in [(default.case.adc, realistic.case.adc), (default.case.dwi[800.0], realistic.case.dwi[800.0]),
                 (default.case.ktrans, realistic.case.ktrans), (default.case.dce[7], realistic.case.dce[7]),
                 (default.case.zones, realistic.case.zones), (default.lesion_mask, realistic.lesion_mask)]:
        assert np.array_equal(arr(x), arr(y))
    assert default.ground_truth == realistic.ground_truth
    assert default.deformation.GetParameters() == realistic.deformation.GetParameters()
    again = make_phantom(31, ggg=[3, 3], lesion_zones=["PZ", "PZ"], deformation_mm=2.0, appearance="realistic")
    assert np.array_equal(arr(again.case.t2), arr(realistic.case.t2))
    assert again.case.t2.GetOrigin() == realistic.case.t2.GetOrigin()
    assert not np.array_equal(arr(make_phantom(32, appearance="realistic", with_dce=False).case.t2)[:4],
                              arr(realistic.case.t2)[:4])


def test_zone_contrast_and_heterogeneity(pair):
    """PZ brighter than CG; the CG heterogeneous (BPH nodules) far beyond the default's gentle
    texture; high-grade lesions darker than their zone."""
    default, realistic = pair
    zones = arr(realistic.case.zones).astype(int)
    cg = binary_erosion(zones == 1, iterations=2)
    pz = binary_erosion(zones == 2, iterations=1)

    def cv(t2, mask):
        return float(np.std(t2[mask]) / np.mean(t2[mask]))

    t2r, t2d = arr(realistic.case.t2), arr(default.case.t2)
    assert np.median(t2r[pz]) > 1.4 * np.median(t2r[cg])
    assert cv(t2r, cg) > 1.3 * cv(t2d, cg)  # 1.52 for this seed
    lesions = arr(realistic.lesion_mask)
    for lesion in realistic.ground_truth.lesions:
        core = binary_erosion(lesions == lesion.label, iterations=1)
        core = core if core.sum() >= 4 else lesions == lesion.label
        assert np.mean(t2r[core]) < 0.8 * np.median(t2r[pz])


def test_bad_appearance_is_refused():
    with pytest.raises(ParameterError, match="appearance"):
        make_phantom(0, appearance="photoreal")


def test_cli_writes_realistic_phantoms(tmp_path):
    from ProstateLesionCADLib.cli import main

    common = ["phantoms", "--n", "1", "--seed", "4", "--no-dce", "--no-ktrans", "--size", "64", "--slices", "12"]
    assert main(common + ["--out", str(tmp_path / "d")]) == 0
    assert main(common + ["--out", str(tmp_path / "r"), "--appearance", "realistic"]) == 0
    case = "Phantom-4-000"
    for name in ("zones.nrrd", "lesions.nrrd", "adc.nrrd"):
        assert np.array_equal(arr(sitk.ReadImage(str(tmp_path / "d" / case / name))),
                              arr(sitk.ReadImage(str(tmp_path / "r" / case / name))))
    assert not np.array_equal(arr(sitk.ReadImage(str(tmp_path / "d" / case / "t2.nrrd"))),
                              arr(sitk.ReadImage(str(tmp_path / "r" / case / "t2.nrrd"))))


def test_demo_recipe_phantom_plan(tmp_path):
    from ProstateLesionCADLib.demo import zones_model

    assert zones_model.phantom_plan(3) == [(0, "default"), (1, "default"), (2, "default")]
    assert zones_model.phantom_plan(2, "realistic") == [(0, "realistic"), (1, "realistic")]
    mixed = zones_model.phantom_plan(3, "mixed")
    assert [look for _, look in mixed] == ["default"] * 3 + ["realistic"] * 3
    assert sorted(i for i, _ in mixed) == list(range(6))  # no anatomy twice
    assert "6 synthetic phantoms" in zones_model.training_data_text(3, 7001, "mixed")
    with pytest.raises(ParameterError, match="appearance"):
        zones_model.train_demo_cascade(tmp_path / "m", n_cases=2, appearance="glossy")
    assert not (tmp_path / "m").exists()
    images, labels = zones_model.write_phantom_pairs(1, 5, tmp_path / "pairs", appearance="mixed")
    assert len(images) == len(labels) == 2 and all(p.is_file() for p in images + labels)


def test_appearance_eval_raw_split_is_the_cascade_before_post_processing():
    """demo/zones_appearance_eval.raw_cg is CNN-2's split that run_cascade post-processes: the
    shipped post-processing of it gives run_cascade's CG exactly (bundled model, a held-out
    phantom in a non-canonical voxel order)."""
    from ProstateLesionCADLib.demo.zones_appearance_eval import phantom_dice, raw_cg
    from ProstateLesionCADLib.zones.cascade import load_cascade, run_cascade
    from ProstateLesionCADLib.zones.postprocess import one_piece_cg, posterior_lateral_pz

    nets = load_cascade()
    ph = make_phantom(9905, with_dce=False, with_ktrans=False, appearance="realistic")
    t2 = sitk.Flip(ph.case.t2, [True, False, False])
    gland = sitk.Flip(ph.case.prostate, [True, False, False])
    prostate = sitk.GetArrayFromImage(gland) > 0
    raw = raw_cg(nets, t2, prostate)
    assert raw.shape == prostate.shape and raw.any() and not (raw & ~prostate).any()
    shipped = run_cascade(nets, t2, prostate=gland).zones == 1
    # the post-processing works in the canonical order: undo the flip before applying it
    unflip = np.flip(raw, axis=2)
    expected = posterior_lateral_pz(one_piece_cg(unflip, np.flip(prostate, axis=2)), np.flip(prostate, axis=2),
                                    ph.case.t2)
    assert np.array_equal(np.flip(expected, axis=2), shipped)
    scores = phantom_dice(nets, "default", 1, 9901)
    assert scores["n"] == 1 and scores["prostate"] > 0.85 and 0.0 < scores["pz"] <= 1.0


def test_appearance_eval_tool_refuses_bad_input(tmp_path):
    import subprocess
    import sys

    tool = [sys.executable, "-m", "ProstateLesionCADLib.commands.eval_zones_appearance"]
    proc = subprocess.run(tool + ["--out", str(tmp_path / "x"), "--n", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--n" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()
