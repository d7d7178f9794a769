"""End-to-end detector tests with the shipped demo model (trained on phantoms by
retina_unet.demo_model): `prostate-cad detect` on held-out phantoms (outputs on the T2
grid, LPS boxes, segmentation quality) and channel handling (--drop, missing channels)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib import cli
from ProstateLesionCADLib.study.loading import load_case
from ProstateLesionCADLib.errors import CaseError
from ProstateLesionCADLib.formats import read_detections
from ProstateLesionCADLib.models.package import find_model
from ProstateLesionCADLib.phantoms.generate import write_phantom
from ProstateLesionCADLib.demo.detector_model import DEMO_NAME, demo_phantom
from ProstateLesionCADLib.detection.retina_unet.inference import model_input

# held-out phantoms from the training distribution (1-3 lesions, GGG uniform); seeds never used in
# training or calibration (the demo model: seeds 100..1003 and 60000..60149). Two keep the test
# short (pre-processing dominates).
HELD_OUT = [9001, 9002]


@pytest.fixture(scope="module")
def demo_model():
    pkg = find_model(DEMO_NAME, task="detector")  # verifies every sha256
    assert "DEMO" in pkg.card["intended_use"] and "phantom" in pkg.card["intended_use"]
    assert sum(f["bytes"] for f in pkg.card["files"]) < 10 * 2**20
    return pkg


@pytest.fixture(scope="module")
def detected(demo_model, tmp_path_factory):
    """Run `prostate-cad detect` on every held-out phantom (each written as NRRD + case.json)."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    root = tmp_path_factory.mktemp("heldout")
    cases, truths = [], []
    for seed in HELD_OUT:
        phantom = demo_phantom(seed, case_id=f"HeldOut-{seed}")
        folder = write_phantom(phantom, root / "cases" / phantom.case.case_id)
        out = root / "det" / phantom.case.case_id
        code = cli.main(["detect", str(folder), "--model", DEMO_NAME, "--out", str(out), "--no-register",
                         "--zones", str(folder / "zones.nrrd"), "--prostate", str(folder / "prostate.nrrd")])
        assert code == 0
        cases.append(read_detections(out / "detections.json").cases[0])
        truths.append(json.loads((folder / "ground-truth.json").read_text())["cases"][0])
        truths[-1]["lesion_mask"] = str(folder / "lesions.nrrd")
    return root, cases, truths


def test_detect_outputs_on_t2_grid_in_lps(detected):
    root, cases, _ = detected
    case = cases[0]
    t2 = load_case(root / "cases" / case.case_id).t2
    prob = sitk.ReadImage(str(case.probability_map))
    values = sitk.GetArrayFromImage(prob)
    assert 0.0 <= values.min() and values.max() <= 1.0 and values.max() > 0.2
    assert prob.GetSize() == t2.GetSize() and np.allclose(prob.GetOrigin(), t2.GetOrigin())
    assert case.detections and all(0 <= d.ggg <= 3 for d in case.detections)
    d = case.detections[0]
    lo, hi = np.array(d.box_lps[0]), np.array(d.box_lps[1])
    assert np.all(lo <= np.array(d.center_lps)) and np.all(np.array(d.center_lps) <= hi)
    assert set(d.class_scores) == {"0", "1", "2", "3"} and all(0 <= v <= 1 for v in d.class_scores.values())


def test_channel_rules(demo_model, tmp_path, capsys):
    from ProstateLesionCADLib.preprocessing.preprocess import preprocess

    phantom = demo_phantom(9100, ggg=[3], with_ktrans=False)
    prep = preprocess(phantom.case)
    assert "KTRANS" in prep.missing()
    # the demo model was trained with channel drop: a missing KTRANS is blanked with a warning
    with pytest.warns(UserWarning, match="KTRANS"):
        inp = model_input(prep, demo_model.card)
    assert inp.blanked == ["KTRANS"] and not inp.array[demo_model.card["channels"].index("KTRANS")].any()
    # --drop DWI blanks both DWI channels, never T2
    inp = model_input(prep, demo_model.card, drop=["DWI"])
    assert set(inp.blanked) == {"DWI_LOW", "DWI_HIGH", "KTRANS"} and inp.array[0].any()
    # a model not trained with channel drop refuses a case without the channel
    strict = dict(demo_model.card, channel_drop={"trained_with": False})
    with pytest.raises(CaseError, match="has no KTRANS"):
        model_input(prep, strict)
    code = cli.main(["detect", str(tmp_path / "missing"), "--model", DEMO_NAME, "--out", str(tmp_path / "o")])
    assert code == 2 and "no such file" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert cli.main(["detect", str(tmp_path), "--model", DEMO_NAME, "--out", str(tmp_path / "o"),
                     "--drop", "T2"]) == 2
