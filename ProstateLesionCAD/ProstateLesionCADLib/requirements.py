"""The Python packages each panel step needs beyond what 3D Slicer ships, found without importing them.

3D Slicer's Python comes with numpy, SciPy, SimpleITK, pydicom, Pillow, requests and a
few more (SLICER_BUNDLED, read from the SuperBuild of the oldest supported Slicer, 5.12);
VTK is built into Slicer and is no pip package there. What a step needs on top of that is
in STEP_PACKAGES; `missing_packages(steps)` finds what is absent or too old with
importlib's metadata and finder only, so checking never loads torch into Slicer's process.

Installing follows `install_plan`: PyTorch first, through PyTorch's own installer (the
CUDA build where an NVIDIA GPU is present, the CPU build otherwise), then packages whose
declared dependencies must not be installed (lavlab-taps: the gland model runs with plain
onnxruntime, not its onnxruntime-gpu and MONAI), then the rest. Every pip call gets the
constraints of `constraints_text`: the versions tested with this library
(slicer-constraints.txt next to this file) plus the installed version of every package
Slicer bundles, so an installation can never upgrade one of them. `failure_sentence`
turns pip's output into one sentence saying what to do.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

from .errors import CadError

SHIPPED_CONSTRAINTS = Path(__file__).with_name("slicer-constraints.txt")


class InstallFailed(CadError):
    """Installing the packages a step needs failed; the message says what to do."""


@dataclass(frozen=True)
class Package:
    name: str  # distribution name on the package index
    module: str  # top-level import name, located with importlib's finder (never imported here)
    minimum: str  # lowest version known to work
    label: str  # what the panel calls it
    no_deps: bool = False  # installed without its declared dependencies
    via_pytorch: bool = False  # installed by PyTorch's own installer (GPU or CPU build)

    @property
    def requirement(self) -> str:
        return f"{self.name}>={self.minimum}"


PACKAGES: dict[str, Package] = {p.name: p for p in (
    Package("torch", "torch", "2.2", "PyTorch", via_pytorch=True),
    Package("onnxruntime", "onnxruntime", "1.17", "ONNX Runtime"),
    Package("onnx", "onnx", "1.15", "ONNX (reads the gland model for PyTorch)"),
    Package("lavlab-taps", "taps", "1.1", "TAPS prostate gland model (lavlab-taps)", no_deps=True),
    Package("scikit-image", "skimage", "0.22", "scikit-image"),
    Package("matplotlib", "matplotlib", "3.8", "Matplotlib"),
    Package("monai", "monai", "1.3", "MONAI"),
    # DICOM pixel decoders for pydicom (JPEG 2000); Slicer's GDCM reads the other compressed syntaxes
    Package("pylibjpeg", "pylibjpeg", "2.0", "pylibjpeg"),
    Package("pylibjpeg-openjpeg", "openjpeg", "2.0", "OpenJPEG decoder (pylibjpeg-openjpeg)"),
    Package("highdicom", "highdicom", "0.28", "highdicom (DICOM SEG and SR)"),
)}

# step -> packages its `prostate-cad` command imports beyond Slicer's own (panel steps, plus training)
STEP_PACKAGES: dict[str, tuple[str, ...]] = {
    "registration": ("matplotlib", "pylibjpeg", "pylibjpeg-openjpeg"),  # the checkerboard figure
    # TAPS gland network + the cascade's CNN-2; the decoders come with the first install because
    # any step may be the first to read a compressed DICOM study
    "zones": ("torch", "onnxruntime", "onnx", "lavlab-taps", "pylibjpeg", "pylibjpeg-openjpeg"),
    # zones and registration when not given, Retina U-Net (torch) or FocalNet (scikit-image peaks)
    "detection": ("torch", "onnxruntime", "onnx", "lavlab-taps", "scikit-image", "matplotlib", "pylibjpeg",
                  "pylibjpeg-openjpeg"),
    "install": (),
    # `prostate-cad export --dicom-seg --dicom-sr`: the SEG and SR are written with highdicom
    "dicom-seg": ("highdicom",),
    "training": ("torch", "monai", "matplotlib", "scikit-image"),
}

# What Slicer 5.12.3 installs in its Python (SuperBuild/External_python-*.cmake), with its
# versions; pinned at their installed version whenever this library installs anything.
SLICER_BUNDLED: dict[str, str] = {
    "numpy": "2.4.6", "scipy": "1.17.1", "SimpleITK": "2.5.5", "pydicom": "3.0.2", "pillow": "12.2.0",
    "packaging": "26.2", "pyparsing": "3.3.2", "python-dateutil": "2.9.0.post0", "six": "1.17.0",
    "typing_extensions": "4.15.0", "requests": "2.34.2", "urllib3": "2.7.0", "certifi": "2026.5.20",
    "idna": "3.16", "charset-normalizer": "3.4.7", "setuptools": "82.0.1", "wheel": "0.47.0",
    "pip": "26.1.1",
}

# free space wanted where packages go before installing: PyTorch's CUDA build (chosen where an
# NVIDIA driver is found) with its CUDA libraries is several GB, its CPU build about one
NEEDED_BYTES = {"torch-gpu": 6 * 2**30, "torch-cpu": 2 * 2**30, "other": 1 * 2**30}


def needed_bytes(packages: Iterable[Package], nvidia_driver: bool) -> int:
    """Free space to ask for before installing `packages`."""
    if any(p.via_pytorch for p in packages):
        return NEEDED_BYTES["torch-gpu" if nvidia_driver else "torch-cpu"]
    return NEEDED_BYTES["other"]


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): 'SimpleITK' -> 'simpleitk'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: '2.13.0+cpu' -> (2, 13, 0)."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    return tuple(int(x) for x in match.group(1).split(".")) if match else ()


def installed_version(name: str) -> Optional[str]:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def importable(module: str) -> bool:
    """Whether a top-level module can be imported, found without importing it."""
    return importlib.util.find_spec(module) is not None


def _present(package: Package, version_of: Optional[Callable[[str], Optional[str]]],
             can_import: Optional[Callable[[str], bool]]) -> bool:
    version = (version_of or installed_version)(package.name)
    return (version is not None and release(version) >= release(package.minimum)
            and (can_import or importable)(package.module))


def step_needs(steps: Iterable[str]) -> list[Package]:
    """The packages the steps need, each once, in installation order."""
    names = {name for step in steps for name in STEP_PACKAGES.get(step, ())}
    return install_order(PACKAGES[name] for name in names)


def install_order(packages: Iterable[Package]) -> list[Package]:
    """PyTorch first, then packages installed without dependencies, then the rest (table order)."""
    order = list(PACKAGES)
    return sorted(set(packages), key=lambda p: (not p.via_pytorch, not p.no_deps, order.index(p.name)))


def missing_packages(steps: Iterable[str], version_of: Optional[Callable[[str], Optional[str]]] = None,
                     can_import: Optional[Callable[[str], bool]] = None) -> list[Package]:
    """The packages the steps need that are not installed (or older than their minimum);
    `version_of` and `can_import` default to installed_version and importable."""
    return [p for p in step_needs(steps) if not _present(p, version_of, can_import)]


def missing_by_step(steps: Iterable[str], **checks) -> dict[str, list[Package]]:
    """Step -> its missing packages (an empty list when it can run)."""
    return {step: missing_packages([step], **checks) for step in steps}


def describe(packages: Sequence[Package]) -> str:
    """'PyTorch, ONNX Runtime and Matplotlib'."""
    labels = [p.label for p in packages]
    if len(labels) < 2:
        return "".join(labels)
    return ", ".join(labels[:-1]) + " and " + labels[-1]


def missing_tooltip(packages: Sequence[Package]) -> str:
    """The tooltip of a step button its missing packages disable."""
    return (f"Needs {describe(packages)}, not installed in Slicer's Python yet: "
            "press 'Install required packages…'.")


@dataclass(frozen=True)
class InstallStep:
    """One call of an installer: PyTorch's own, or pip with these arguments."""

    packages: tuple[Package, ...]
    via_pytorch: bool = False
    no_deps: bool = False

    @property
    def requirements(self) -> list[str]:
        return [p.requirement for p in self.packages]

    @property
    def label(self) -> str:
        return describe(self.packages)

    def pip_arguments(self, constraints: Path) -> list[str]:
        """What follows `pip install`; the constraints file keeps Slicer's packages as they are."""
        return ["-c", str(constraints), *(["--no-deps"] if self.no_deps else []), *self.requirements]


def install_plan(packages: Sequence[Package]) -> list[InstallStep]:
    """PyTorch through its installer, no-dependency packages in one pip call, the rest in another."""
    ordered = install_order(packages)
    plan = [InstallStep((p,), via_pytorch=True) for p in ordered if p.via_pytorch]
    no_deps = tuple(p for p in ordered if p.no_deps and not p.via_pytorch)
    rest = tuple(p for p in ordered if not p.no_deps and not p.via_pytorch)
    if no_deps:
        plan.append(InstallStep(no_deps, no_deps=True))
    if rest:
        plan.append(InstallStep(rest))
    return plan


def bundled_versions(version_of: Optional[Callable[[str], Optional[str]]] = None) -> dict[str, str]:
    """Slicer's own packages as installed here: name -> version (absent ones left out)."""
    found = {name: (version_of or installed_version)(name) for name in SLICER_BUNDLED}
    return {name: version for name, version in found.items() if version}


def constraints_text(shipped: str, pinned: Mapping[str, str]) -> str:
    """The shipped constraints with `pinned` (name -> installed version) added; a pinned
    package's line in the shipped file gives way, so an installed package is never replaced."""
    pins = {canonical(name): f"{name}=={version}" for name, version in pinned.items()}
    lines = []
    for line in shipped.splitlines():
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#", 1)[0])
        if name and canonical(name.group(1)) in pins:
            continue
        lines.append(line)
    lines.append("# installed in this Python: never upgraded or replaced")
    lines.extend(pins[key] for key in sorted(pins))
    return "\n".join(lines) + "\n"


def write_constraints(folder: Path, pinned: Mapping[str, str], shipped: Path = SHIPPED_CONSTRAINTS) -> Path:
    path = Path(folder) / "constraints.txt"
    path.write_text(constraints_text(shipped.read_text(encoding="utf-8"), pinned), encoding="utf-8")
    return path


# (pattern in pip's output, what to do) — first match wins
FAILURES: tuple[tuple[str, str], ...] = (
    (r"No space left on device|\[Errno 28\]|not enough space on the disk",
     "The disk is full: free at least {need} where Slicer keeps its Python packages ({target}) and install again."),
    (r"ProxyError|Cannot connect to proxy|407 Proxy Authentication|Tunnel connection failed",
     "A proxy blocked the download: start Slicer with HTTPS_PROXY set to your proxy's address "
     "(ask your IT department for it) and install again."),
    (r"CERTIFICATE_VERIFY_FAILED|SSLError|SSL: ",
     "The secure connection to the package index failed, as it does behind a proxy that inspects "
     "traffic: start Slicer with PIP_CERT set to your organisation's certificate file and install again."),
    (r"Failed to establish a new connection|Temporary failure in name resolution|Name or service not known|"
     r"Network is unreachable|getaddrinfo failed|No route to host|Read timed out|ConnectTimeout|"
     r"Connection refused|nodename nor servname",
     "The package index could not be reached: connect this computer to the internet (or set HTTPS_PROXY "
     "if it goes through a proxy) and install again."),
    (r"Permission denied|\[Errno 13\]|Access is denied|\[WinError 5\]",
     "Slicer's Python folder ({target}) is not writable: install Slicer in a folder you own "
     "(or run it once as an administrator) and install again."),
    (r"ResolutionImpossible|conflicting dependencies|Cannot install .* because these package versions",
     "The packages conflict with ones already installed in Slicer (see pip's log in the Python console): "
     "install them in a fresh copy of Slicer, or report the log."),
    (r"No matching distribution found|Could not find a version that satisfies",
     "The package index has no build of these packages for this computer (see pip's log in the Python "
     "console): check the internet connection, or use a newer Slicer."),
)


def failure_sentence(log: str, target: str = "", need_bytes: int = NEEDED_BYTES["other"]) -> str:
    """One sentence saying what to do after pip (or PyTorch's installer) failed with this output."""
    need = f"{need_bytes / 2**30:.0f} GB"
    for pattern, sentence in FAILURES:
        if re.search(pattern, log, re.IGNORECASE):
            return sentence.format(target=target or "Slicer's Python folder", need=need)
    return ("Installing the packages failed (pip's log is in the Python console): "
            "check the internet connection and the free disk space, then install again.")
