"""First use in a Python that holds only what 3D Slicer bundles: the panels' installer, then the steps.

A fresh virtual environment gets the packages of requirements.SLICER_BUNDLED at the
versions of Slicer 5.12 (the oldest supported release; Slicer's VTK, ITK and DICOM tool
packages are left out: nothing installed here depends on them). In it, the very function
the panels call (dependencies.install_missing) runs step by step, with pip in place of
slicer.util.pip_install and the CPU build torch==2.13.0+cpu in place of PyTorchUtils;
after each installation the step's `prostate-cad` command runs on the embedded sample as
the panel runs it (`python -m ProstateLesionCADLib`, the library on PYTHONPATH).
pip's cache is the user's usual one, so repeated runs download nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "ProstateLesionCAD"
sys.path.insert(0, str(MODULE_DIR))

from ProstateLesionCADLib import requirements  # noqa: E402
from ProstateLesionCADLib.resources import sample_case_dir  # noqa: E402

TORCH = "torch==2.13.0+cpu"  # the CPU wheel: never a CUDA build in tests

# Runs inside the fresh environment: one install_missing call as a panel makes it, reported as JSON.
DRIVER = """
import json, sys, time
from ProstateLesionCADLib import requirements
from ProstateLesionCADSlicer import dependencies

steps = sys.argv[1].split(",")
asked, progress = [], []
pip = dependencies.subprocess_pip(sys.executable)

def torch(requirement, constraints):
    assert requirement.startswith("torch>="), requirement
    pip(["-c", str(constraints), sys.argv[2]])

before = {s: [p.name for p in m] for s, m in requirements.missing_by_step(steps).items()}
started = time.monotonic()
done = dependencies.install_missing(steps, pip, torch, lambda text, details: asked.append(text) or True,
                                    lambda fraction, message: progress.append([fraction, message]))
print(json.dumps({"before": before, "installed": [p.name for p in done], "asked": asked, "progress": progress,
                  "after": {s: [p.name for p in m] for s, m in requirements.missing_by_step(steps).items()},
                  "torch_imported": "torch" in sys.modules, "seconds": time.monotonic() - started}))
"""


def _run(argv, env=None, timeout=900) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{done.stdout[-3000:]}"
    return done


def _freeze(python: Path) -> dict[str, str]:
    out = _run([str(python), "-m", "pip", "list", "--format", "json"]).stdout
    return {requirements.canonical(d["name"]): d["version"] for d in json.loads(out[out.index("["):])}


def _slicer_like_python(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, str], Path]:
    """A fresh virtual environment holding what Slicer 5.12 bundles: (its python, its packages, the
    environment running the library in it, the installer driver)."""
    venv = tmp_path / "slicer-python"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    bundled = requirements.SLICER_BUNDLED
    _run([str(python), "-m", "pip", "install", "--quiet", f"pip=={bundled['pip']}"])
    _run([str(python), "-m", "pip", "install", "--quiet",
          *(f"{name}=={version}" for name, version in bundled.items() if name != "pip")])
    slicer_like = _freeze(python)
    assert {requirements.canonical(n): v for n, v in bundled.items()}.items() <= slicer_like.items()
    env = {**os.environ, "PYTHONPATH": str(MODULE_DIR), "PYTHONUNBUFFERED": "1"}
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return python, slicer_like, env, driver


@pytest.mark.slow
def test_the_panels_installer_makes_registration_zones_and_detection_run_in_a_slicer_like_python(tmp_path):
    timings = {}
    started = time.monotonic()
    python, slicer_like, env, driver = _slicer_like_python(tmp_path)
    timings["Slicer-like Python"] = time.monotonic() - started

    sample = sample_case_dir()
    out = tmp_path / "out"
    commands = {
        "registration": ["register", str(sample), "--preset", "fast", "--starts", "1", "--workers", "1",
                         "--out", str(out / "registration")],
        "zones": ["zones", str(sample), "--out", str(out / "zones")],
        "detection": ["detect", str(sample), "--model", "demo-retina-unet-phantoms", "--register-preset", "fast",
                      "--zones", str(out / "zones" / "zones.nrrd"), "--out", str(out / "detection")],
    }
    expected_files = {"registration": "transform.h5", "zones": "zones.nrrd", "detection": "detections.json"}
    installed_all = []
    for step, command in commands.items():
        t0 = time.monotonic()
        report = json.loads(_run([str(python), str(driver), step, TORCH], env).stdout.strip().splitlines()[-1])
        needed = [p.name for p in requirements.step_needs([step])]
        assert report["before"][step] == [n for n in needed if n not in installed_all]  # nothing else there
        assert report["installed"] == report["before"][step] and report["after"] == {step: []}
        assert len(report["asked"]) == 1  # asked once, naming what will be installed
        assert all(requirements.PACKAGES[n].label in report["asked"][0] for n in report["installed"])
        assert report["progress"][-1] == [1.0, f"Installed {requirements.describe([requirements.PACKAGES[n] for n in report['installed']])}."]
        assert not report["torch_imported"]  # the installer never loads torch in its own process
        installed_all += report["installed"]
        t1 = time.monotonic()
        _run([str(python), "-m", "ProstateLesionCADLib", *command], env)
        assert (out / step / expected_files[step]).is_file()
        timings[step] = (round(t1 - t0), round(time.monotonic() - t1))  # (install, run) seconds
    detections = json.loads((out / "detection" / "detections.json").read_text())
    assert detections["cases"][0]["case_id"] == "ProstateX-0000"
    assert sorted(installed_all) == sorted(p.name for p in requirements.step_needs(commands))

    # nothing more to install: no question asked
    again = json.loads(_run([str(python), str(driver), ",".join(commands), TORCH], env).stdout.strip().splitlines()[-1])
    assert again["installed"] == [] and again["asked"] == []

    # Slicer's own packages as they were; no VTK pulled in; every added package pinned in the shipped constraints
    after = _freeze(python)
    assert {k: after.get(k) for k in slicer_like} == slicer_like
    assert "vtk" not in after and "itk" not in after
    shipped = requirements.constraints_text(requirements.SHIPPED_CONSTRAINTS.read_text(), {})
    pins = dict(line.split("==") for line in shipped.splitlines() if "==" in line and not line.startswith("#"))
    pins = {requirements.canonical(k): v for k, v in pins.items()}
    added = {k: v for k, v in after.items() if k not in slicer_like and k != "torch"}
    unpinned = {k: v for k, v in added.items() if pins.get(k) != v}
    assert not unpinned, f"installed but not pinned in slicer-constraints.txt: {unpinned}"
    print(f"first-use install timings (s): {timings}, total {time.monotonic() - started:.0f}")


@pytest.mark.slow
def test_the_panels_installer_makes_the_dicom_export_run_in_a_slicer_like_python(tmp_path, prostatex_dir):
    """"Export to DICOM database" needs highdicom: asked for once, installed with what it brings (pinned in
    the shipped constraints), then `prostate-cad export --dicom-seg --dicom-sr` writes both files on the
    real ProstateX-0000 DICOM, as the panel runs it; no PyTorch is involved."""
    import SimpleITK as sitk

    from ProstateLesionCADLib.formats import DetectionSet, write_detections
    from ProstateLesionCADLib.study.loading import load_case
    from test_export import CASE, MODEL, _detections

    python, slicer_like, env, driver = _slicer_like_python(tmp_path)
    report = json.loads(_run([str(python), str(driver), "dicom-seg", TORCH], env).stdout.strip().splitlines()[-1])
    assert report["before"] == {"dicom-seg": ["highdicom"]} and report["installed"] == ["highdicom"]
    assert report["after"] == {"dicom-seg": []} and len(report["asked"]) == 1 and "highdicom" in report["asked"][0]
    assert not report["torch_imported"]

    study = prostatex_dir / CASE
    t2 = load_case(study).t2
    assert isinstance(t2, sitk.Image)
    detections = tmp_path / "detections.json"
    write_detections(DetectionSet([_detections(t2)], MODEL), detections)
    out = tmp_path / "export"
    _run([str(python), "-m", "ProstateLesionCADLib", "export", str(study), "--detections", str(detections),
          "--dicom-seg", "--dicom-sr", "--out", str(out)], env)
    assert (out / "segmentation.dcm").is_file() and (out / "measurement-report.dcm").is_file()

    after = _freeze(python)
    assert {k: after.get(k) for k in slicer_like} == slicer_like  # Slicer's own packages as they were
    assert "torch" not in after
    shipped = requirements.constraints_text(requirements.SHIPPED_CONSTRAINTS.read_text(), {})
    pins = {requirements.canonical(k): v for k, v in
            (line.split("==") for line in shipped.splitlines() if "==" in line and not line.startswith("#"))}
    unpinned = {k: v for k, v in after.items() if k not in slicer_like and pins.get(k) != v}
    assert not unpinned, f"installed but not pinned in slicer-constraints.txt: {unpinned}"
