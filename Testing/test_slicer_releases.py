"""The supported 3D Slicer releases: one number in slicer_version.py, CMake and README, checked
when the extension is configured and when the module loads.

Facts from Slicer's sources (Slicer/Slicer, checked by hand):
- CMakeLists.txt sets Slicer_VERSION_MINOR "12" on branch 5.12 and "13" on main; stable
  releases have an even minor version, previews (built from main) an odd one.
- CMakeLists.txt sets Slicer_REQUIRED_PYTHON_VERSION "3.12.10" on both (5.8 had 3.9.10).
- Base/QTCore/qSlicerCoreApplication.h declares Q_PROPERTY(int majorVersion ...) and
  Q_PROPERTY(int minorVersion ...) on 5.12 and main: the module reads slicer.app.majorVersion.
- CMake/SlicerConfigVersion.cmake.in marks an older Slicer incompatible with a requested
  version, so find_package(Slicer 5.12 REQUIRED) stops the configure of an extension build.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ProstateLesionCAD"))

from ProstateLesionCADSlicer import slicer_version  # noqa: E402

SLICER_PYTHON = {(5, 12): (3, 12), (5, 13): (3, 12)}  # Slicer_REQUIRED_PYTHON_VERSION, major.minor
REMOVED_IN_PYTHON_312 = {"distutils", "imp", "asynchat", "asyncore", "smtpd"}
MODULE = REPO / "ProstateLesionCAD" / "ProstateLesionCAD.py"


def test_oldest_supported_is_the_stable_release_and_newest_the_preview():
    assert slicer_version.OLDEST_SUPPORTED == (5, 12) and slicer_version.NEWEST_TESTED == (5, 13)
    assert slicer_version.release_kind(*slicer_version.OLDEST_SUPPORTED) == "stable"
    assert slicer_version.release_kind(*slicer_version.NEWEST_TESTED) == "preview"
    assert slicer_version.supported_releases_text() == "3D Slicer 5.12 (stable) and 5.13 (preview)"


def test_an_older_slicer_gets_one_sentence_and_supported_ones_none():
    for major, minor in ((5, 12), (5, 13), (5, 14), (6, 0)):
        assert slicer_version.unsupported_message(major, minor) is None
    for major, minor in ((5, 10), (5, 8), (4, 11)):
        message = slicer_version.unsupported_message(major, minor)
        assert message.count(". ") == 0 and message.endswith(".")
        assert "5.12 or newer" in message and f"this is {major}.{minor}" in message


def test_cmake_and_readme_state_the_same_releases():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    minimum = re.search(r'set\(PROSTATELESIONCAD_MINIMUM_SLICER_VERSION "(\d+)\.(\d+)"\)', text)
    assert tuple(map(int, minimum.groups())) == slicer_version.OLDEST_SUPPORTED
    assert "find_package(Slicer ${PROSTATELESIONCAD_MINIMUM_SLICER_VERSION} REQUIRED)" in text
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert slicer_version.supported_releases_text() in readme


def test_the_library_runs_on_the_python_of_every_supported_slicer():
    requires = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    bounds = tuple(map(int, re.fullmatch(r">=(\d+)\.(\d+),<(\d+)\.(\d+)", requires).groups()))
    for python in SLICER_PYTHON.values():
        assert bounds[:2] <= python < bounds[2:], f"{requires} excludes Python {python}"
    for path in (REPO / "ProstateLesionCAD").rglob("*.py"):
        if "egg-info" in path.parts or "__pycache__" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
        assert not imported & REMOVED_IN_PYTHON_312, f"{path.relative_to(REPO)} imports {imported & REMOVED_IN_PYTHON_312}"


def test_the_module_checks_the_running_slicer_once_it_has_started():
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    module = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ProstateLesionCAD")
    source = ast.unparse(module)
    assert "slicer.app.connect('startupCompleted()', self.onStartupCompleted)" in source
    handler = next(n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "onStartupCompleted")
    body = ast.unparse(handler)
    assert ("slicer_version.unsupported_message(slicer.app.majorVersion, slicer.app.minorVersion)" in body
            and "slicer.util.errorDisplay(message)" in body)
    # the check comes first: on an older Slicer nothing else runs
    assert body.index("unsupported_message") < body.index("SampleData")
