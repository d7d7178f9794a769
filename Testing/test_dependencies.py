"""The table of what each step needs, the installer the panels call (with stand-in installers),
the constraints that keep Slicer's packages, pip failures in one sentence, and the Slicer
installers around slicer.util.pip_install and PyTorchUtils (with stand-in modules)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ProstateLesionCAD"))

from ProstateLesionCADLib import requirements  # noqa: E402
from ProstateLesionCADLib.capabilities import panel_steps  # noqa: E402
from ProstateLesionCADLib.requirements import PACKAGES, InstallFailed  # noqa: E402
from ProstateLesionCADSlicer import dependencies  # noqa: E402
from ProstateLesionCADSlicer.dependencies import PipFailed  # noqa: E402
from ProstateLesionCADSlicer.step_arguments import step_availability  # noqa: E402

BUNDLED = dict(requirements.SLICER_BUNDLED)


class FakePython:
    """Installed distributions of a pretend Python; the installers add to it."""

    def __init__(self, installed=None):
        self.installed = dict(BUNDLED if installed is None else installed)
        self.pip_calls, self.torch_calls, self.constraints = [], [], []

    def version_of(self, name):
        wanted = requirements.canonical(name)
        return next((v for k, v in self.installed.items() if requirements.canonical(k) == wanted), None)

    def importable(self, module):
        return any(p.module == module and self.version_of(p.name) for p in PACKAGES.values())

    def pip(self, arguments):
        self.pip_calls.append(list(arguments))
        self.constraints.append(Path(arguments[1]).read_text())
        for requirement in arguments:
            name = requirement.split(">=")[0]
            if name in PACKAGES:
                self.installed[name] = "99.0"

    def torch(self, requirement, constraints):
        self.torch_calls.append(requirement)
        self.constraints.append(Path(constraints).read_text())
        self.installed["torch"] = "2.13.0+cpu"


@pytest.fixture
def python(monkeypatch):
    fake = FakePython()
    monkeypatch.setattr(requirements, "installed_version", fake.version_of)
    monkeypatch.setattr(requirements, "importable", fake.importable)
    monkeypatch.setattr(dependencies, "_free_bytes", lambda folder: 100 * 2**30)
    monkeypatch.setattr(dependencies, "nvidia_driver", lambda: False)
    return fake


def test_every_panel_step_has_an_entry_and_the_table_is_consistent():
    assert set(panel_steps()) <= set(requirements.STEP_PACKAGES)
    assert all(name in PACKAGES for names in requirements.STEP_PACKAGES.values() for name in names)
    assert not set(map(requirements.canonical, PACKAGES)) & set(map(requirements.canonical, BUNDLED))
    assert PACKAGES["lavlab-taps"].no_deps and PACKAGES["torch"].via_pytorch
    assert [p.name for p in requirements.step_needs(["detection", "registration"])] == [
        "torch", "lavlab-taps", "onnxruntime", "onnx", "scikit-image", "matplotlib", "pylibjpeg", "pylibjpeg-openjpeg"]


def test_every_library_dependency_slicer_lacks_is_installed_by_a_step():
    """What pyproject declares is what the first-use installer brings into Slicer, except the
    packages only command-line verbs without a panel step import (.seg.nrrd export)."""
    import tomllib
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {requirements.canonical(re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0]) for d in declared}
    bundled = set(map(requirements.canonical, BUNDLED)) | {"simpleitk"}
    command_line_only = {"slicerio"}  # highdicom: installed for the panel's "Export to DICOM database"
    installed = {requirements.canonical(n) for names_ in requirements.STEP_PACKAGES.values() for n in names_}
    # lavlab-taps is installed without its declared dependencies, outside pyproject (Makefile)
    assert names - bundled - command_line_only == installed - {"lavlab-taps"}
    pinned = requirements.SHIPPED_CONSTRAINTS.read_text()
    assert all(f"{p.name}==" in pinned for p in PACKAGES.values() if not p.via_pytorch)


def test_missing_means_absent_too_old_or_not_importable():
    versions = {"torch": "2.13.0+cpu", "onnxruntime": "1.16.3", "lavlab-taps": "1.1.2"}
    missing = requirements.missing_packages(["zones"], versions.get, lambda module: module != "taps")
    # not importable; older than 1.17; not installed
    assert [p.name for p in missing] == ["lavlab-taps", "onnxruntime", "onnx", "pylibjpeg", "pylibjpeg-openjpeg"]
    assert requirements.release("2.13.0+cpu") == (2, 13, 0) and requirements.release("0.26.0rc1") == (0, 26, 0)
    assert requirements.missing_packages(["install"], lambda n: None, lambda m: False) == []


def test_the_plan_installs_pytorch_first_then_no_dependency_packages_then_the_rest(tmp_path):
    plan = requirements.install_plan([PACKAGES[n] for n in ("matplotlib", "lavlab-taps", "torch", "onnxruntime")])
    assert [(s.via_pytorch, s.no_deps, s.requirements) for s in plan] == [
        (True, False, ["torch>=2.2"]), (False, True, ["lavlab-taps>=1.1"]),
        (False, False, ["onnxruntime>=1.17", "matplotlib>=3.8"])]
    c = tmp_path / "c.txt"
    assert plan[1].pip_arguments(c) == ["-c", str(c), "--no-deps", "lavlab-taps>=1.1"]
    assert plan[2].pip_arguments(c) == ["-c", str(c), "onnxruntime>=1.17", "matplotlib>=3.8"]


def test_constraints_pin_what_is_installed_over_the_shipped_versions():
    shipped = "# tested\nmatplotlib==3.11.2\nPillow==13.0.0  # newer than Slicer's\nnumpy>=2\n"
    text = requirements.constraints_text(shipped, {"pillow": "12.2.0", "numpy": "2.4.6", "SimpleITK": "2.5.5"})
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == ["matplotlib==3.11.2", "numpy==2.4.6", "pillow==12.2.0", "SimpleITK==2.5.5"]
    shipped_file = requirements.SHIPPED_CONSTRAINTS.read_text()
    for package in PACKAGES.values():
        if not package.via_pytorch:
            assert f"\n{package.name}==" in shipped_file, f"{package.name} has no tested version"
    assert not any(f"\n{name.lower()}==" in shipped_file.lower() for name in BUNDLED)


@pytest.mark.parametrize("log, words", [
    ("ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device", "disk is full"),
    ("WARNING: Retrying ... NewConnectionError: Failed to establish a new connection: [Errno -3] Temporary "
     "failure in name resolution\nERROR: No matching distribution found for onnxruntime", "could not be reached"),
    ("ProxyError('Cannot connect to proxy.', OSError('Tunnel connection failed: 407 Proxy Authentication "
     "Required'))", "proxy"),
    ("SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed'))",
     "PIP_CERT"),
    ("ERROR: Could not install packages due to an OSError: [Errno 13] Permission denied: '/opt/Slicer/lib'",
     "not writable"),
    ("ERROR: ResolutionImpossible: for help visit https://pip.pypa.io", "conflict"),
    ("something else went wrong", "install again"),
])
def test_a_failure_is_one_sentence_saying_what_to_do(log, words):
    sentence = requirements.failure_sentence(log, "/opt/Slicer/lib/Python", 2**31)
    assert words in sentence and sentence.endswith(".") and sentence.count(". ") == 0 and "\n" not in sentence


def test_installing_asks_once_reports_progress_and_keeps_slicers_packages(python):
    questions, progress = [], []
    done = dependencies.install_missing(["zones", "detection"], python.pip, python.torch,
                                        lambda text, details: questions.append((text, details)) or True,
                                        lambda fraction, message: progress.append((fraction, message)))
    assert [p.name for p in done] == ["torch", "lavlab-taps", "onnxruntime", "onnx", "scikit-image", "matplotlib",
                                      "pylibjpeg", "pylibjpeg-openjpeg"]
    assert len(questions) == 1 and questions[0][0].startswith("Zones and Detect need Python packages")
    assert "PyTorch" in questions[0][0] and "lavlab-taps>=1.1 (without its dependencies)" in questions[0][1]
    assert "take up to 2 GB" in questions[0][0] and "CPU build: no NVIDIA driver" in questions[0][1]
    assert python.torch_calls == ["torch>=2.2"]
    assert [c[2:] for c in python.pip_calls] == [["--no-deps", "lavlab-taps>=1.1"],
                                                ["onnxruntime>=1.17", "onnx>=1.15", "scikit-image>=0.22", "matplotlib>=3.8",
                                                 "pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0"]]
    torch_constraints, pip_constraints = python.constraints[0], python.constraints[1]
    assert "numpy==2.4.6" in torch_constraints and "matplotlib==" not in torch_constraints
    assert "numpy==2.4.6" in pip_constraints and "SimpleITK==2.5.5" in pip_constraints
    assert "matplotlib==3.11.2" in pip_constraints
    assert [f for f, _ in progress] == [0.0, 1 / 3, 2 / 3, 1.0]
    assert progress[0][1] == "Installing PyTorch (1/3)…" and progress[-1][1].startswith("Installed PyTorch")
    # all there now: nothing asked, nothing installed
    assert dependencies.install_missing(["zones", "detection"], python.pip, python.torch,
                                        lambda *a: pytest.fail("asked again")) == []


def test_saying_no_installs_nothing(python):
    assert dependencies.install_missing(["registration"], python.pip, python.torch, lambda *a: False) is None
    assert python.pip_calls == [] and python.installed == BUNDLED


def test_failures_become_one_sentence_and_leave_no_files(python, tmp_path, monkeypatch):
    def offline(arguments):
        raise PipFailed("WARNING: Retrying after connection broken by 'NewConnectionError(... Failed to "
                        "establish a new connection: [Errno 101] Network is unreachable')\nERROR: No matching "
                        "distribution found for matplotlib>=3.8")

    work = tmp_path / "work"
    monkeypatch.setattr(dependencies.tempfile, "mkdtemp", lambda prefix: str(work.mkdir() or work))
    with pytest.raises(InstallFailed, match="could not be reached: connect this computer to the internet"):
        dependencies.install_missing(["registration"], offline, python.torch, lambda *a: True)
    assert not work.exists()

    monkeypatch.setattr(dependencies, "_free_bytes", lambda folder: 2**29)
    with pytest.raises(InstallFailed, match=r"Only 0.5 GB are free .* free at least 2 GB"):
        dependencies.install_missing(["zones"], python.pip, python.torch, lambda *a: True)
    monkeypatch.setattr(dependencies, "nvidia_driver", lambda: True)  # PyTorch's CUDA build: more room
    monkeypatch.setattr(dependencies, "_free_bytes", lambda folder: 3 * 2**30)
    with pytest.raises(InstallFailed, match=r"Only 3.0 GB are free .* free at least 6 GB"):
        dependencies.install_missing(["zones"], python.pip, python.torch, lambda *a: True)
    assert python.pip_calls == [] and python.torch_calls == []


def test_a_replaced_slicer_package_or_a_package_still_missing_is_reported(python, monkeypatch):
    monkeypatch.setattr(dependencies, "_free_bytes", lambda folder: None)  # unknown free space: no pre-check

    def upgrades_numpy(arguments):
        python.pip(arguments)
        python.installed["numpy"] = "2.5.0"

    with pytest.raises(InstallFailed, match="replaced Slicer's own numpy 2.4.6 with 2.5.0: restart Slicer"):
        dependencies.install_missing(["registration"], upgrades_numpy, python.torch, lambda *a: True)
    python.installed["numpy"] = "2.4.6"
    with pytest.raises(InstallFailed, match="PyTorch could not be found after installing"):
        dependencies.install_missing(["zones"], python.pip, lambda requirement, constraints: None, lambda *a: True)


def test_steps_whose_packages_are_missing_are_disabled_with_a_tooltip_naming_them():
    missing = {"zones": [PACKAGES["torch"], PACKAGES["onnxruntime"]]}
    availability = step_availability(panel_steps(), ("registration", "zones"), lambda step: missing.get(step, []))
    assert availability["registration"][0] and "prostate-cad register" in availability["registration"][1]
    assert availability["zones"] == (False, "Needs PyTorch and ONNX Runtime, not installed in Slicer's Python "
                                            "yet: press 'Install required packages…'.")


@pytest.fixture
def fake_slicer(monkeypatch):
    calls = []

    def pip_install(requirements_list):
        calls.append(requirements_list)
        print("Collecting matplotlib>=3.8")
        if "fail" in requirements_list:
            print("ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device")
            raise subprocess.CalledProcessError(1, ["PythonSlicer", "-m", "pip"])

    module = types.ModuleType("slicer")
    module.util = types.SimpleNamespace(pip_install=pip_install)
    monkeypatch.setitem(sys.modules, "slicer", module)
    return calls


def test_slicer_pip_passes_a_list_and_turns_a_failure_into_pip_failed_with_its_output(fake_slicer, capsys):
    dependencies.slicer_pip(["-c", Path("/tmp/c.txt"), "matplotlib>=3.8"])
    assert fake_slicer == [["-c", "/tmp/c.txt", "matplotlib>=3.8"]]
    with pytest.raises(PipFailed) as failure:
        dependencies.slicer_pip(["fail"])
    assert "No space left on device" in failure.value.log
    assert "Collecting matplotlib" in capsys.readouterr().out  # still shown in Slicer's console


def test_slicer_torch_uses_pytorchutils_with_slicers_pins(monkeypatch, tmp_path):
    seen = []

    class Logic:
        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None):
            seen.append((askConfirmation, forceComputationBackend, torchVersionRequirement,
                         os.environ.get("PIP_CONSTRAINT")))
            return types.SimpleNamespace(__version__="2.13.0")

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=Logic))
    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)
    pins = tmp_path / "pins.txt"
    dependencies.slicer_torch("torch>=2.2", pins)
    assert seen == [(False, None, ">=2.2", str(pins))] and "PIP_CONSTRAINT" not in os.environ
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # the PyTorch extension is not installed
    with pytest.raises(InstallFailed, match="install 'PyTorch' in the Extensions Manager"):
        dependencies.slicer_torch("torch>=2.2", pins)


def test_the_glue_answers_what_is_missing_without_loading_torch_or_onnxruntime():
    """What the panels do when they open (step availability, the missing-packages line) in a fresh
    interpreter: neither torch nor onnxruntime ends up imported."""
    pytest.importorskip("slicer", reason="the slicer-core wheel is a dev dependency")
    script = """
import sys
import slicer
from ProstateLesionCADSlicer import background_process, dependencies
from ProstateLesionCADSlicer.cad_logic import CadLogic, PANEL_STEPS
from ProstateLesionCADSlicer.zonal_logic import ZonalLogic
scene = slicer.vtkMRMLScene()
assert all(offered for offered, _ in CadLogic(scene).step_availability().values())
assert ZonalLogic(scene).step_availability()["zones"][0]
assert dependencies.missing_summary(PANEL_STEPS) == ""
loaded = sorted(m for m in ("torch", "onnxruntime", "skimage", "matplotlib", "taps") if m in sys.modules)
print("loaded:", loaded)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "ProstateLesionCAD")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "loaded: []"


def test_the_panels_install_button_shows_progress_and_the_failure_sentence(monkeypatch):
    """install_from_panel (both panels' button): progress in the bar and status line, the one
    sentence in the line and an error box on failure, the bar reset."""
    shown, asked = [], []
    module = types.ModuleType("slicer")
    module.util = types.SimpleNamespace(
        confirmOkCancelDisplay=lambda text, title, detailedText="": asked.append(text) or True,
        errorDisplay=lambda text, windowTitle="": shown.append((windowTitle, text)))
    module.app = types.SimpleNamespace(processEvents=lambda: None)
    monkeypatch.setitem(sys.modules, "slicer", module)
    bar, label = types.SimpleNamespace(value=0), types.SimpleNamespace(text="")
    seen = []

    def failing(steps, confirm, progress):
        assert confirm("Install?", "details")
        progress(0.4, "installing matplotlib")
        seen.append((bar.value, label.text))
        raise InstallFailed("matplotlib could not be installed: free some disk space and try again.")

    monkeypatch.setattr(dependencies, "install_in_slicer", failing)
    sentence = dependencies.install_from_panel(["registration"], bar, label)
    assert sentence == "matplotlib could not be installed: free some disk space and try again."
    assert asked == ["Install?"] and seen == [(40, "installing matplotlib")]
    assert bar.value == 0 and label.text == sentence
    assert shown == [("Installing Python packages failed", sentence)]

    monkeypatch.setattr(dependencies, "install_in_slicer", lambda steps, confirm, progress: progress(1.0, "done"))
    assert dependencies.install_from_panel(["registration"], bar, label) == "" and bar.value == 100
