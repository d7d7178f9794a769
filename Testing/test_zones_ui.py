"""ZonalSegmentation's panel (.ui, PySide6 offscreen), module file and CMake lists.

What is verified: the .ui is well-formed and loads in PySide6 (Slicer's own widgets fall
back to their declared base classes, so their Slicer-specific behaviour is NOT exercised
here — that needs Slicer, see the module's self-test); every `self.ui.<name>` the module
uses exists with the class its use needs; MRML selectors receive the scene; the module
file has the four standard classes and imports only what Slicer provides plus project
packages; the CMake lists name every library file and resource; the icon is 128×128.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "ZonalSegmentation"
MODULE = MODULE_DIR / "ZonalSegmentation.py"
UI = MODULE_DIR / "Resources" / "UI" / "ZonalSegmentation.ui"
EXPECTED_CLASS = {
    r".*Selector$": {"qMRMLNodeComboBox"},
    r".*Button$": {"QPushButton"},
    r".*Label$": {"QLabel"},
    r".*ComboBox$": {"QComboBox"},
    r"progressBar": {"QProgressBar"},
    r".*SpinBox$": {"QDoubleSpinBox"},
}
SLICER_PROVIDED = {"slicer", "vtk", "qt", "ctk", "numpy", "SimpleITK"}
PROJECT = {"ProstateLesionCADLib", "ProstateLesionCADSlicer"}
CAD_DIR = REPO / "ProstateLesionCAD"  # holds the zones library and glue this module depends on


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.fixture(scope="module")
def app():
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


def test_panel_widgets_exist_with_the_class_the_module_needs(app):
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QWidget

    root = ET.parse(UI).getroot()
    widgets = {w.get("name"): w.get("class") for w in root.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE.read_text(encoding="utf-8")))
    assert len(used) >= 15
    assert not used - set(widgets), f"used but absent from the .ui: {used - set(widgets)}"
    loaded = QUiLoader().load(str(UI))
    assert loaded is not None
    for name in used:
        expected = next(c for p, c in EXPECTED_CLASS.items() if re.fullmatch(p, name))
        assert widgets[name] in expected, f"{name} is a {widgets[name]}"
        assert loaded.findChild(QWidget, name) is not None, name
    wired = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert {n for n, c in widgets.items() if c == "qMRMLNodeComboBox"} <= wired
    node_types = {w.get("name"): [s.text for s in w.iter("string")] for w in root.iter("widget")
                  if w.get("class") == "qMRMLNodeComboBox"}
    assert "vtkMRMLScalarVolumeNode" in node_types["t2Selector"]
    assert "vtkMRMLSegmentationNode" in node_types["segmentationSelector"]


def test_module_file_shape_and_imports():
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert classes == {"ZonalSegmentation", "ZonalSegmentationWidget", "ZonalSegmentationLogic", "ZonalSegmentationTest"}
    allowed = set(sys.stdlib_module_names) | SLICER_PROVIDED | PROJECT
    glue = [CAD_DIR / "ProstateLesionCADSlicer" / "zonal_logic.py"]
    for path in [MODULE, *glue]:
        assert not _imports(path) - allowed, f"{path.name} imports {_imports(path) - allowed}"
    for path in glue:
        assert not _imports(path) & {"qt", "ctk"}, path.name
    for path in (CAD_DIR / "ProstateLesionCADLib" / "zones").glob("*.py"):
        assert not _imports(path) & {"slicer", "qt", "ctk", "vtk"}, path.name


def test_cmake_lists_every_script_and_resource(tmp_path):
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert "WITH_GENERIC_TESTS" in text and "slicerMacroBuildScriptedModule" in text
    listed = set(re.findall(r"\$\{MODULE_NAME\}([\w/]*\.(?:py|png|ui))", text))
    listed |= {m for m in re.findall(r"^\s+([\w/]+\.(?:py|png|ui))$", text, re.M)}
    names = {s.replace("${MODULE_NAME}", "ZonalSegmentation") for s in listed}
    names = {("ZonalSegmentation" + n) if n.startswith(("Lib/", "Slicer/", ".py")) else n for n in names}
    # the zones library and MRML glue are installed by ProstateLesionCAD (its CMake test checks them)
    expected = {"ZonalSegmentation.py"}
    assert expected <= names, f"not in CMakeLists.txt: {expected - names}"
    if shutil.which("cmake"):  # evaluate with CMake itself, Slicer's macro recorded
        probe = tmp_path / "probe.cmake"
        probe.write_text('function(slicerMacroBuildScriptedModule)\n'
                         '  cmake_parse_arguments(M "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})\n'
                         '  foreach(s ${M_SCRIPTS} ${M_RESOURCES})\n    file(APPEND ${OUT} "${s}\\n")\n  endforeach()\n'
                         'endfunction()\ninclude(CMakeLists.txt)\n')
        out = tmp_path / "out.txt"
        subprocess.run(["cmake", f"-DOUT={out}", "-P", str(probe)], cwd=MODULE_DIR, check=True, capture_output=True)
        files = set(out.read_text().split())
        assert expected <= files
        assert all((MODULE_DIR / f).is_file() for f in files)
    from PIL import Image

    assert Image.open(MODULE_DIR / "Resources/Icons/ZonalSegmentation.png").size == (128, 128)


def test_self_test_fails_on_a_missing_step_and_logic_has_the_shared_shape():
    from test_cad_ui import _self_test_shape

    _self_test_shape(MODULE, "ZonalSegmentationTest", "ZonalSegmentationLogic")
    text = MODULE.read_text(encoding="utf-8")
    # one process runner for both panels: no polling loop of its own
    assert "BackgroundProcess(" not in text and "ProcessRunner()" in text
    assert '"zones-demo-cascade"' not in text  # the zones package's DEMO_MODEL
