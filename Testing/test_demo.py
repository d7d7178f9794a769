"""`prostate-cad demo` on the embedded ProstateX-0000 sample: the files a new user gets,
their geometry, progress lines, and the all-or-nothing output folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib.preprocessing.channels import CHANNELS
from ProstateLesionCADLib.demo.run import DemoStep, add_step, default_steps, run_demo
from ProstateLesionCADLib.errors import CaseError
from ProstateLesionCADLib.resources import sample_case_dir


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from ProstateLesionCADLib.cli import main

    out = tmp_path_factory.mktemp("demo") / "demo-output"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):  # results and progress
        code = main(["demo", "--out", str(out), "--registration-starts", "2"])
    return code, out, buffer.getvalue()


def test_demo_writes_channels_montage_and_summary(demo_run):
    code, out, text = demo_run
    assert code == 0
    prep_dir = out / "preprocessed"
    for name in CHANNELS:
        img = sitk.ReadImage(str(prep_dir / f"{name}.nrrd"))
        assert img.GetSize() == (160, 160, 24)
        assert np.allclose(img.GetSpacing(), (0.5, 0.5, 3.0))
    meta = json.loads((prep_dir / "preprocessed.json").read_text())
    assert meta["case_id"] == "ProstateX-0000" and meta["channels"] == list(CHANNELS)
    assert meta["sources"]["DWI_LOW"] == "DWI b400 (measured)"
    assert meta["sources"]["DWI_HIGH"] == "DWI b800 (measured)"
    t2 = sitk.GetArrayFromImage(sitk.ReadImage(str(prep_dir / "T2.nrrd")))
    assert np.isfinite(t2).all() and 0.1 < float(np.median(t2[t2 != 0])) < 1.0  # normalised T2
    # the montage: a real PNG of the 3x4 panel figure
    png = (out / "channels-montage.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    from matplotlib.image import imread

    pixels = imread(str(out / "channels-montage.png"))
    assert pixels.shape[0] > 600 and pixels.shape[1] > 800
    # yellow crop box drawn (R and G high, B low) on the T2 panel
    yellow = (pixels[..., 0] > 0.6) & (pixels[..., 1] > 0.6) & (pixels[..., 2] < 0.45)
    assert yellow.sum() > 300  # a ~90x90 px anti-aliased rectangle
    summary = (out / "SUMMARY.txt").read_text()
    assert "ProstateX-0000" in summary and "channels-montage.png" in summary
    # progress lines of every step, ending at 100 %
    lines = [l for l in text.splitlines() if l.startswith("PROGRESS ")]
    assert any("[1/7 load sample]" in l for l in lines) and any("[6/7 channel montage]" in l for l in lines)
    percents = [float(l.split()[1]) for l in lines]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert not list(out.parent.glob(".demo-output.partial-*"))  # staging folder cleaned up


def test_demo_runs_zones_registration_and_detection(demo_run):
    from ProstateLesionCADLib.formats import read_detections

    code, out, text = demo_run
    assert code == 0
    zones = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "zones" / "zones.nrrd")))
    assert set(np.unique(zones)) == {0, 1, 2}
    report = json.loads((out / "zones" / "zones.json").read_text())
    assert 15 < report["volumes_cm3"]["prostate"] < 150
    # the crop is centred on the gland the zones step found
    meta = json.loads((out / "preprocessed" / "preprocessed.json").read_text())
    assert meta["geometry"]["center_source"] == "prostate mask"
    reg = json.loads((out / "registration" / "registration.json").read_text())
    assert (out / "registration" / "transform.h5").is_file() and "identity_kept" in reg
    dets = read_detections(out / "detections" / "detections.json")
    assert dets.model["name"] == "demo-retina-unet-phantoms" and "synthetic" in dets.model["intended_use"].lower()
    assert (out / "detections" / "lesions-over-t2.png").is_file()


def test_demo_failure_leaves_no_output_and_steps_can_be_added(tmp_path):
    calls = []

    def failing(state, progress):
        calls.append(state.case.case_id if state.case else None)
        raise CaseError("The demo step failed on purpose.")

    steps = add_step(default_steps()[:1], DemoStep("break", failing), after="load sample")
    assert [s.name for s in steps] == ["load sample", "break"]
    out = tmp_path / "demo-output"
    with pytest.raises(CaseError, match="on purpose"):
        run_demo(out, steps=steps)
    assert calls == ["ProstateX-0000"]  # ran after the sample was loaded
    assert not out.exists() and not list(tmp_path.glob(".demo-output.partial-*"))
    # steps can be inserted before or after a named one
    names = [s.name for s in add_step(default_steps(), DemoStep("x", failing), before="pre-process")]
    assert names == ["load sample", "zonal segmentation", "registration", "x", "pre-process", "write channels",
                     "channel montage", "detect lesions (demo model)"]
    with pytest.raises(ValueError, match="no demo step named"):
        add_step(default_steps(), DemoStep("x", failing), before="nope")


def test_demo_refuses_a_missing_case_folder(tmp_path, capsys):
    from ProstateLesionCADLib.cli import main

    assert sample_case_dir().is_dir()
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--case", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()
