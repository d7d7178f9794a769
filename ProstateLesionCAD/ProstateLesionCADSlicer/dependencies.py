"""First use of a step: install the Python packages it needs into Slicer's Python, asking once.

Qt-free. `install_missing(steps, pip, torch, confirm, progress)` is what the panels call:
it finds what the steps lack (ProstateLesionCADLib.requirements, without importing
anything), asks `confirm` once with the list, installs PyTorch through `torch` and the
rest through `pip` with a constraints file that pins every package Slicer bundles, reports
each call through `progress`, and checks afterwards that the packages are there and that
Slicer's own were not changed. Failures raise InstallFailed with one sentence saying what
to do.

The installers are passed in: in Slicer `slicer_pip` (slicer.util.pip_install) and
`slicer_torch` (PyTorchUtils of Slicer's PyTorch extension, which picks the CUDA build when
an NVIDIA GPU is present and the CPU build otherwise); in tests and plain Python
`subprocess_pip(python)`. PyTorchUtils imports torch once right after installing it; apart
from that, torch is only ever imported by the `prostate-cad` background processes.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from ProstateLesionCADLib import requirements
from ProstateLesionCADLib.requirements import InstallFailed, Package

PipRunner = Callable[[list], None]  # the arguments after `pip install`; raises PipFailed
TorchRunner = Callable[[str, Path], None]  # "torch>=2.2", a constraints file; raises PipFailed
Confirm = Callable[[str, str], bool]  # (question, details) -> install?
Progress = Callable[[float, str], None]  # (fraction 0..1, message)

STEP_NAMES = {"registration": "Registration", "zones": "Zones", "detection": "Detect", "training": "Training",
              "dicom-seg": "Export to DICOM database"}


class PipFailed(Exception):
    """pip (or PyTorch's installer) ended with an error; `log` is what it printed."""

    def __init__(self, log: str):
        super().__init__(log.strip().splitlines()[-1] if log.strip() else "pip failed")
        self.log = log


def site_packages() -> str:
    """Where pip installs into this Python (Slicer's own when running in Slicer)."""
    return sysconfig.get_paths()["purelib"]


def missing_summary(steps: Sequence[str]) -> str:
    """'Zones and Detect need Python packages that 3D Slicer does not include: PyTorch and …'
    ('' when nothing is missing): what the panel shows above its install button."""
    packages = requirements.missing_packages(steps)
    if not packages:
        return ""
    names = [STEP_NAMES.get(s, s) for s in steps if requirements.missing_packages([s])]
    who = (", ".join(names[:-1]) + " and " + names[-1]) if len(names) > 1 else "".join(names)
    return (f"{who} need{'s' if len(names) == 1 else ''} Python packages that 3D Slicer does not include: "
            f"{requirements.describe(packages)}.")


def nvidia_driver() -> bool:
    """Whether an NVIDIA driver is installed (its nvidia-smi tool is on the PATH), which makes
    PyTorch's installer choose the CUDA build."""
    return shutil.which("nvidia-smi") is not None


def question(steps: Sequence[str], packages: Sequence[Package], gpu: bool = False) -> tuple[str, str]:
    """The one question asked before installing, and its details (the pip requirements)."""
    size = requirements.needed_bytes(packages, gpu) / 2**30
    text = (f"{missing_summary(steps)} Install them now? They take up to {size:.0f} GB and the download may "
            "take several minutes; Slicer's own packages (numpy, SimpleITK, pydicom, SciPy, …) are not changed.")
    build = "CUDA build: an NVIDIA driver was found" if gpu else "CPU build: no NVIDIA driver was found"
    details = "\n".join(f"{p.requirement}" + (" (without its dependencies)" if p.no_deps else "")
                        + (f" (through Slicer's PyTorch extension; {build})" if p.via_pytorch else "")
                        for p in packages)
    return text, details


def install_missing(steps: Sequence[str], pip: PipRunner, torch: TorchRunner, confirm: Confirm,
                    progress: Optional[Progress] = None, work_dir: Optional[Path] = None) -> Optional[list[Package]]:
    """Install what `steps` need and lack: the packages installed, [] when nothing was missing,
    None when the user said no. InstallFailed (one sentence) when installing failed."""
    report = progress or (lambda fraction, message: None)
    missing = requirements.missing_packages(steps)
    if not missing:
        return []
    gpu = nvidia_driver()
    text, details = question(steps, missing, gpu)
    if not confirm(text, details):
        return None
    target = site_packages()
    plan = requirements.install_plan(missing)
    need = requirements.needed_bytes(missing, gpu)
    free = _free_bytes(target)
    if free is not None and free < need:
        raise InstallFailed(f"Only {free / 2**30:.1f} GB are free where Slicer keeps its Python packages ({target}): "
                            f"free at least {need / 2**30:.0f} GB and install again.")
    bundled = requirements.bundled_versions()
    folder = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="ProstateLesionCAD-install-"))
    try:
        constraints = requirements.write_constraints(folder, bundled)
        pins_only = folder / "slicer-pins.txt"
        pins_only.write_text(requirements.constraints_text("", bundled), encoding="utf-8")
        for index, step in enumerate(plan):
            report(index / len(plan), f"Installing {step.label} ({index + 1}/{len(plan)})…")
            try:
                if step.via_pytorch:
                    torch(step.requirements[0], pins_only)
                else:
                    pip(step.pip_arguments(constraints))
            except PipFailed as failure:
                raise InstallFailed(requirements.failure_sentence(failure.log, target, need)) from failure
    finally:
        if work_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    importlib.invalidate_caches()
    changed = {name: (version, requirements.installed_version(name)) for name, version in bundled.items()
               if requirements.installed_version(name) != version}
    if changed:
        what = ", ".join(f"{name} {old} with {new or 'nothing'}" for name, (old, new) in changed.items())
        raise InstallFailed(f"Installing replaced Slicer's own {what}: restart Slicer, and reinstall Slicer "
                            "if a module misbehaves.")
    still = requirements.missing_packages(steps)
    if still:
        raise InstallFailed(f"{requirements.describe(still)} could not be found after installing: restart Slicer "
                            "and press the step's button again.")
    report(1.0, f"Installed {requirements.describe(missing)}.")
    return missing


def _free_bytes(folder: str) -> Optional[int]:
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


# ------------------------------------------------------------ installers

def subprocess_pip(python: str = sys.executable) -> PipRunner:
    """`python -m pip install <arguments>` in a child process (plain Python, tests)."""

    def run(arguments: list) -> None:
        done = subprocess.run([python, "-m", "pip", "install", *map(str, arguments)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace")
        if done.returncode != 0:
            raise PipFailed(done.stdout)

    return run


class _Tee(io.TextIOBase):
    """Passes writes on to `stream` and keeps them: Slicer's installers print pip's output."""

    def __init__(self, stream):
        self.stream, self.parts = stream, []

    def write(self, text):
        self.parts.append(text)
        return self.stream.write(text) if self.stream is not None else len(text)

    def flush(self):
        if self.stream is not None:
            self.stream.flush()

    @property
    def text(self) -> str:
        return "".join(self.parts)


@contextlib.contextmanager
def _pip_output():
    """Collect what the installer prints; a failed call raises PipFailed with it."""
    tee = _Tee(sys.stdout)
    try:
        with contextlib.redirect_stdout(tee):
            yield tee
    except subprocess.CalledProcessError as error:
        raise PipFailed(tee.text + str(error)) from error


def slicer_pip(arguments: list) -> None:
    """slicer.util.pip_install with a list of pip arguments (the form every supported Slicer takes)."""
    import slicer

    with _pip_output():
        slicer.util.pip_install([str(a) for a in arguments])


@contextlib.contextmanager
def _pip_constraint(path: Path):
    """PIP_CONSTRAINT for the pip PyTorch's installer runs (it takes no constraints argument).

    pip splits the variable at whitespace, so a path holding a space is left out; the
    check after installing still catches a replaced Slicer package."""
    old = os.environ.get("PIP_CONSTRAINT")
    usable = not any(c.isspace() for c in str(path))
    if usable:
        os.environ["PIP_CONSTRAINT"] = " ".join(filter(None, [old, str(path)]))
    try:
        yield
    finally:
        if usable:
            if old is None:
                os.environ.pop("PIP_CONSTRAINT", None)
            else:
                os.environ["PIP_CONSTRAINT"] = old


def slicer_torch(requirement: str, constraints: Path) -> None:
    """PyTorch through the PyTorch extension's PyTorchUtils (light-the-torch: CUDA build where an
    NVIDIA driver is found, CPU build otherwise)."""
    try:
        import PyTorchUtils
    except ImportError:
        raise InstallFailed("PyTorch is installed by Slicer's PyTorch extension, which is missing: install "
                            "'PyTorch' in the Extensions Manager, restart Slicer and install again.") from None
    version = requirement[len("torch"):]
    with _pip_constraint(constraints), _pip_output():
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=version)
    if torch is None:
        raise PipFailed("PyTorch was not installed.")


def install_in_slicer(steps: Sequence[str], confirm: Confirm, progress: Optional[Progress] = None):
    """install_missing with Slicer's installers (the panels, and the self-tests with confirm=lambda *a: True)."""
    return install_missing(steps, slicer_pip, slicer_torch, confirm, progress)


def install_from_panel(steps: Sequence[str], progress_bar, status_label) -> str:
    """What a panel's *Install required packages…* button does: ask, install with progress in
    the panel's bar and status line, and on failure show the one sentence in the line and in
    an error box. Returns that sentence ("" on success)."""
    import slicer

    def confirm(text, details):
        return slicer.util.confirmOkCancelDisplay(text, "Install Python packages", detailedText=details)

    def progress(fraction, message):
        progress_bar.value = int(100 * fraction)
        status_label.text = message
        slicer.app.processEvents()

    try:
        install_in_slicer(steps, confirm, progress)
    except InstallFailed as error:
        failure = str(error)
        progress_bar.value = 0
        status_label.text = failure
        slicer.util.errorDisplay(failure, windowTitle="Installing Python packages failed")
        return failure
    return ""
