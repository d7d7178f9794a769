"""The panels' .ui files (PySide6, offscreen) and the module files' imports.

Slicer's own widgets (qMRMLNodeComboBox, ctkCollapsibleButton, ...) are not in PySide6:
the loader falls back to each custom widget's declared base class, so a form loads
here exactly when its XML is sound and declares its custom widgets. The widget names
the module code uses (`self.ui.<name>`) are checked against the XML with their class.
"""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "ProstateLesionCAD" / "ProstateLesionCAD.py"
UI = REPO / "ProstateLesionCAD" / "Resources" / "UI" / "ProstateLesionCAD.ui"
GLUE = REPO / "ProstateLesionCAD" / "ProstateLesionCADSlicer"

# What the module code does with each widget decides the class it must be.
EXPECTED_CLASS = {
    r".*Selector$": {"qMRMLNodeComboBox", "qMRMLCheckableNodeComboBox"},
    r".*Button$": {"QPushButton"},
    r".*Label$": {"QLabel"},
    r".*ComboBox$": {"QComboBox"},
    r"thresholdSlider": {"ctkSliderWidget"},
    r"lesionTableView": {"qMRMLTableView"},
    r"progressBar": {"QProgressBar"},
}
SLICER_PROVIDED = {"slicer", "vtk", "qt", "ctk", "numpy", "SimpleITK", "SampleData", "DICOMLib"}
PROJECT = {"ProstateLesionCADLib", "ProstateLesionCADSlicer", "ZonalSegmentationLib", "ZonalSegmentation"}


def _ui_widgets(path: Path) -> dict[str, str]:
    root = ET.parse(path).getroot()
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def _referenced(path: Path) -> set[str]:
    return set(re.findall(r"self\.ui\.(\w+)", path.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def app():
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


@pytest.mark.parametrize("ui_path", sorted(REPO.glob("*/Resources/UI/*.ui")), ids=lambda p: p.name)
def test_every_ui_file_loads(app, ui_path):
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QWidget

    loader = QUiLoader()
    widget = loader.load(str(ui_path))
    assert widget is not None, loader.errorString()
    names = _ui_widgets(ui_path)
    declared = {c.findtext("class") for c in ET.parse(ui_path).getroot().iter("customwidget")}
    builtin = set(loader.availableWidgets())
    unknown = {cls for cls in names.values() if cls not in builtin and cls not in declared}
    assert not unknown, f"{ui_path.name}: classes neither Qt's nor declared as custom widgets: {unknown}"
    for name in names:
        assert widget.findChild(QWidget, name) is not None or widget.objectName() == name, name


def test_module_code_refers_only_to_widgets_of_the_expected_class(app):
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QWidget

    widgets = _ui_widgets(UI)
    used = _referenced(MODULE)
    assert len(used) >= 30  # the panel really is wired to the form
    missing = sorted(used - set(widgets))
    assert not missing, f"ProstateLesionCAD.py uses widgets absent from the .ui: {missing}"
    loaded = QUiLoader().load(str(UI))
    for name in used:
        expected = next(classes for pattern, classes in EXPECTED_CLASS.items() if re.fullmatch(pattern, name))
        assert widgets[name] in expected, f"{name} is a {widgets[name]}, expected one of {expected}"
        assert loaded.findChild(QWidget, name) is not None
    # every MRML widget gets the scene from the top-level qMRMLWidget
    root = ET.parse(UI).getroot()
    wired = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    mrml = {n for n, cls in widgets.items() if cls.startswith("qMRML") and cls != "qMRMLWidget"}
    assert mrml <= wired, f"not connected to mrmlSceneChanged: {mrml - wired}"
    assert root.find("widget").get("class") == "qMRMLWidget"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_module_files_import_only_slicer_provided_and_project_packages():
    allowed = set(sys.stdlib_module_names) | SLICER_PROVIDED | PROJECT
    for path in [MODULE, *sorted(GLUE.glob("*.py"))]:
        extra = _imports(path) - allowed
        assert not extra, f"{path.name} imports {extra}, which 3D Slicer does not provide"
    # the MRML glue must stay usable without a GUI (tested with slicer-core): no qt/ctk
    for path in GLUE.glob("*.py"):
        assert not _imports(path) & {"qt", "ctk"}, f"{path.name} imports qt/ctk"
    assert {"slicer", "qt", "vtk"} <= _imports(MODULE)
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert classes == {"ProstateLesionCAD", "ProstateLesionCADWidget", "ProstateLesionCADLogic", "ProstateLesionCADTest"}


def test_lib_packages_never_import_slicer_qt_vtk():
    for lib in REPO.glob("*/*Lib"):
        for path in lib.rglob("*.py"):
            bad = _imports(path) & {"slicer", "qt", "ctk", "vtk"}
            assert not bad, f"{path.relative_to(REPO)} imports {bad}"
