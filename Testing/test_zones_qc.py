"""Zones QC in zones.json: a fragmented CG/PZ split (several CG islands, a PZ that is not mostly
posterior, a ragged CG boundary) is flagged; a phantom's true zones and the demo cascade's
zones on a held-out phantom are not."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from ProstateLesionCADLib.cli import main as cli_main
from ProstateLesionCADLib.demo.detector_model import drawable_demo_phantom
from ProstateLesionCADLib.zones.qc import check_zone_split


@pytest.fixture(scope="module")
def phantom_zones() -> sitk.Image:
    return drawable_demo_phantom(9001, with_dce=False, with_ktrans=False).case.zones


def _like(arr: np.ndarray, ref: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.CopyInformation(ref)
    return img


def test_true_phantom_zones_pass(phantom_zones):
    qc = check_zone_split(phantom_zones)
    assert qc["flags"] == [] and qc["cg_components"] == 1 and qc["cg_slices_in_pieces"] == 0
    assert qc["pz_posterior_share"] >= 0.55 and qc["cg_roughness"] < 0.02


def test_split_central_gland_is_flagged(phantom_zones):
    z = sitk.GetArrayFromImage(phantom_zones)
    ys = np.nonzero((z == 1).any(axis=(0, 2)))[0]
    middle = (ys.min() + ys.max()) // 2
    z[:, middle - 2:middle + 3, :][z[:, middle - 2:middle + 3, :] == 1] = 2  # a band of PZ through the CG
    qc = check_zone_split(_like(z, phantom_zones))
    assert qc["cg_components"] == 2 and any("2 islands" in f for f in qc["flags"])
    assert qc["cg_slices_in_pieces"] >= 2 and any("several pieces" in f for f in qc["flags"])


def test_anterior_peripheral_zone_is_flagged(phantom_zones):
    """The same labels in a frame whose y axis points anterior: the PZ is now in front."""
    share = check_zone_split(phantom_zones)["pz_posterior_share"]
    flipped = sitk.Image(phantom_zones)
    direction = np.array(phantom_zones.GetDirection()).reshape(3, 3)
    direction[:, 1] *= -1
    flipped.SetDirection(direction.flatten().tolist())
    qc = check_zone_split(flipped)
    assert np.isclose(qc["pz_posterior_share"], 1 - share, atol=0.01)
    assert any("posterior half" in f for f in qc["flags"])


def test_ragged_boundary_is_flagged(phantom_zones):
    z = sitk.GetArrayFromImage(phantom_zones)
    cg = z == 1
    shell = ndimage.binary_dilation(cg, iterations=3) & ~ndimage.binary_erosion(cg, iterations=3) & (z > 0)
    noise = np.random.default_rng(0).random(z.shape) < 0.5
    z[shell] = np.where(noise[shell], 1, 2)
    z[ndimage.binary_erosion(cg, iterations=3)] = 1
    qc = check_zone_split(_like(z, phantom_zones))
    assert qc["cg_roughness"] > 0.08 and any("ragged" in f for f in qc["flags"])


def test_zones_json_holds_the_split_checks(tmp_path, capsys):
    phantom = drawable_demo_phantom(9002, with_dce=False, with_ktrans=False)
    t2_file = tmp_path / "t2.nrrd"
    sitk.WriteImage(phantom.case.t2, str(t2_file))
    assert cli_main(["zones", str(t2_file), "--out", str(tmp_path / "out"), "--backend", "cascade"]) == 0
    report = json.loads((tmp_path / "out" / "zones.json").read_text())
    split = report["qc"]["zone_split"]
    assert split == {k: v for k, v in check_zone_split(sitk.ReadImage(str(tmp_path / "out" / "zones.nrrd"))).items()
                     if k != "flags"}
    assert split["cg_components"] >= 1 and 0 <= split["pz_posterior_share"] <= 1
    printed = capsys.readouterr().out
    assert all(f"QC: {flag}" in printed for flag in report["qc"]["flags"])


def test_one_piece_cg_keeps_one_body_without_holes():
    from ProstateLesionCADLib.zones.postprocess import one_piece_cg

    prostate = np.zeros((3, 30, 30), bool)
    prostate[:, 2:28, 2:28] = True
    cg = np.zeros_like(prostate)
    cg[:, 8:20, 8:20] = True  # the body, one 3D component
    cg[1, 12:15, 12:15] = False  # a hole on the middle slice
    cg[1, 8:10, 22:24] = True  # an in-plane piece joined in 3D through the next slice ...
    cg[2, 8:10, 19:24] = True  # ... which belongs to the body there
    cg[0, 24:27, 24:27] = True  # a separate 3D island
    cg[0, 0:2, 0:2] = True  # outside the prostate
    out = one_piece_cg(cg, prostate)
    assert not out[0, 24:27, 24:27].any() and not out[0, 0:2, 0:2].any()
    assert not out[1, 8:10, 22:24].any() and out[2, 8:10, 19:24].all()
    assert out[1, 12:15, 12:15].all()  # the hole is CG again
    assert out[:, 8:20, 8:20].all() and not (out & ~prostate).any()
