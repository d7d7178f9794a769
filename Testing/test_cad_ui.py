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
    r".*SpinBox$": {"QDoubleSpinBox"},
    r".*CheckBox$": {"QCheckBox"},
    r".*TableWidget$": {"QTableWidget"},
    r".*PlaceWidget$": {"qSlicerMarkupsPlaceWidget"},
}
# PyTorchUtils is the module of the PyTorch extension this one depends on (EXTENSION_DEPENDS).
SLICER_PROVIDED = {"slicer", "vtk", "qt", "ctk", "numpy", "SimpleITK", "SampleData", "DICOMLib", "PyTorchUtils"}
PROJECT = {"ProstateLesionCADLib", "ProstateLesionCADSlicer", "ProstateLesionCADLib.zones", "ProstateLesionCADSlicer"}


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


def test_detection_section_offers_the_export_to_the_dicom_database(app):
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QPushButton

    loaded = QUiLoader().load(str(UI))
    button = loaded.findChild(QPushButton, "exportDicomButton")
    assert button is not None and button.text() == "Export to DICOM database"
    assert button.parentWidget() is loaded.findChild(QPushButton, "detectButton").parentWidget()
    assert "DICOM SEG and SR" in button.toolTip()
    source = MODULE.read_text(encoding="utf-8")
    # wired to the step, and offered (with the reason as tooltip when not) by the glue's availability
    assert 'self.ui.exportDicomButton.connect("clicked()", self.onExportToDatabase)' in source
    assert "dicom_export.export_availability(self.cad.params" in source
    assert "self.ui.exportDicomButton.toolTip = tip" in source


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


# Slicer's values (CMake/SlicerDirectories.cmake): scripted modules live in
# ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR} in the build tree.
QTSCRIPTEDMODULES_LIB_DIR = "lib/Slicer-5.12/qt-scripted-modules"
CMAKE_PROBE = """
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer/qt-scripted-modules")
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "%s")
set(CMAKE_BINARY_DIR ${BUILD})
""" % QTSCRIPTEDMODULES_LIB_DIR + """
function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(M "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  file(APPEND ${OUT} "NAME=${M_NAME}\\nGENERIC=${M_WITH_GENERIC_TESTS}\\n")
  foreach(s ${M_SCRIPTS})
    file(APPEND ${OUT} "SCRIPT=${s}\\n")
  endforeach()
  foreach(r ${M_RESOURCES})
    file(APPEND ${OUT} "RESOURCE=${r}\\n")
  endforeach()
endfunction()
macro(install)
  cmake_parse_arguments(I "" "DESTINATION;COMPONENT" "FILES" ${ARGN})
  file(APPEND ${OUT} "INSTALL=${I_FILES}|${I_DESTINATION}\\n")
endmacro()
include(CMakeLists.txt)
"""


def test_module_cmake_lists_every_library_file_and_resource(tmp_path):
    """Evaluate ProstateLesionCAD/CMakeLists.txt with CMake itself (Slicer's macro recorded, not built)."""
    import shutil
    import subprocess

    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    probe = tmp_path / "probe.cmake"
    probe.write_text(CMAKE_PROBE)
    out = tmp_path / "out.txt"
    module_dir = MODULE.parent
    subprocess.run([cmake, f"-DOUT={out}", f"-DBUILD={tmp_path / 'build'}", "-P", str(probe)], cwd=module_dir,
                   check=True, capture_output=True)
    rows = [line.split("=", 1) for line in out.read_text().splitlines()]
    scripts = {v for k, v in rows if k == "SCRIPT"}
    resources = {v for k, v in rows if k == "RESOURCE"}
    installs = [v.split("|") for k, v in rows if k == "INSTALL"]
    assert ("NAME", "ProstateLesionCAD") in [tuple(r) for r in rows] and ("GENERIC", "TRUE") in [tuple(r) for r in rows]
    expected = {p.relative_to(module_dir).as_posix() for folder in ("ProstateLesionCADLib", "ProstateLesionCADSlicer")
                for p in (module_dir / folder).rglob("*.py") if "__pycache__" not in p.parts}
    assert "ProstateLesionCAD.py" in scripts and expected <= scripts
    assert {"Resources/UI/ProstateLesionCAD.ui", "Resources/Icons/ProstateLesionCAD.png"} <= resources
    assert all((module_dir / r).is_file() for r in resources | scripts)
    # the shared Resources/ land where ProstateLesionCADLib.resources looks in an installed module
    shared = {Path(f).resolve().relative_to(REPO / "Resources").as_posix(): d for f, d in installs}
    assert "ModelCatalog.json" in shared and any(k.startswith("Sample/ProstateX-0000/t2.nrrd") for k in shared)
    assert all(d.startswith("lib/Slicer/qt-scripted-modules/Resources/Shared") for d in shared.values())


BUILD_TREE_PROBE = """
import json, os, sys
import ProstateLesionCADLib
from ProstateLesionCADLib import resources
from ProstateLesionCADLib.models.package import installed_packages
from ProstateLesionCADSlicer.sample_data import sample_source
source = sample_source()
print(json.dumps({"lib": ProstateLesionCADLib.__file__, "sample": str(resources.sample_case_dir()),
                  "models": str(resources.bundled_models_dir()), "thumbnail": str(source.thumbnail),
                  "volumes": [str(v.path) for v in source.volumes],
                  "packages": sorted(p.name for p in installed_packages())}))
"""


def test_build_tree_holds_the_sample_and_models_where_the_library_looks(tmp_path):
    """Under ctest the modules run from the build tree: configuring copies the shared Resources/ there.

    The build tree is made as Slicer makes it: CMake evaluates ProstateLesionCAD/CMakeLists.txt
    (configure_file runs for real), then the module's scripts and resources are copied to
    ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/<their relative path>, as
    ctkMacroCompilePythonScript does for slicerMacroBuildScriptedModule (commontk/CTK
    CMake/ctkMacroCompilePythonScript.cmake: tgt = DESTINATION_DIR/<script path>). A Python
    with only that folder on its path then finds the sample, its thumbnail and every bundled model.
    """
    import json
    import os
    import shutil
    import subprocess

    cmake = shutil.which("cmake")
    assert cmake is not None, "cmake is needed to evaluate the module's CMake lists"
    probe = tmp_path / "probe.cmake"
    probe.write_text(CMAKE_PROBE)
    out, build = tmp_path / "out.txt", tmp_path / "build"
    module_dir = MODULE.parent
    subprocess.run([cmake, f"-DOUT={out}", f"-DBUILD={build}", "-P", str(probe)], cwd=module_dir,
                   check=True, capture_output=True)
    modules = build / QTSCRIPTEDMODULES_LIB_DIR
    shared = modules / "Resources" / "Shared"
    source_files = {p.relative_to(REPO / "Resources").as_posix() for folder in ("Sample", "Models")
                    for p in (REPO / "Resources" / folder).rglob("*") if p.is_file()} | {"ModelCatalog.json"}
    copied = {p.relative_to(shared).as_posix() for p in shared.rglob("*") if p.is_file()}
    assert copied == source_files
    assert (shared / "Sample/ProstateX-0000/thumbnail.png").read_bytes() == \
        (REPO / "Resources/Sample/ProstateX-0000/thumbnail.png").read_bytes()
    for key, value in (line.split("=", 1) for line in out.read_text().splitlines()):
        if key in ("SCRIPT", "RESOURCE"):  # what ctkMacroCompilePythonScript copies at build time
            (modules / value).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(module_dir / value, modules / value)
    env = {k: v for k, v in os.environ.items() if k not in ("PROSTATE_CAD_RESOURCES", "PYTHONPATH")}
    env.update(PYTHONPATH=str(modules), PROSTATE_CAD_MODELS=str(tmp_path / "no-user-models"))
    found = json.loads(subprocess.run([sys.executable, "-c", BUILD_TREE_PROBE], env=env, cwd=tmp_path, check=True,
                                      capture_output=True, text=True).stdout.splitlines()[-1])
    assert Path(found["lib"]).is_relative_to(modules)
    assert Path(found["sample"]) == shared / "Sample" / "ProstateX-0000"
    assert Path(found["models"]) == shared / "Models"
    assert all(Path(f).is_relative_to(shared) and Path(f).is_file() for f in [found["thumbnail"], *found["volumes"]])
    bundled = sorted(p.parent.name for p in (REPO / "Resources" / "Models").glob("*/model.json"))
    assert found["packages"] == bundled


def test_extension_metadata_is_complete():
    text = (REPO / "CMakeLists.txt").read_text()
    values = dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert values.get(f"EXTENSION_{key}"), f"EXTENSION_{key} is missing or empty"
    assert values["EXTENSION_DEPENDS"] == "PyTorch"
    assert re.findall(r"add_subdirectory\((\w+)\)", text) == ["ProstateLesionCAD", "ZonalSegmentation"]
    # icon and screenshots are referenced from the repository and exist in it
    for url in [values["EXTENSION_ICONURL"], *values["EXTENSION_SCREENSHOTURLS"].split()]:
        relative = url.split("/main/", 1)[1]
        assert (REPO / relative).is_file(), f"{relative} (referenced by CMakeLists.txt) is not in the repository"
    from PIL import Image

    for icon in (REPO / "Resources/Icons/ProstateLesionCAD.png", MODULE.parent / "Resources/Icons/ProstateLesionCAD.png"):
        assert Image.open(icon).size == (128, 128)


def _self_test_shape(path: Path, test_class: str, logic_class: str) -> None:
    """The module's self-test checks its steps with require_steps and never branches around them
    (a test that skipped a missing step could pass having run nothing); its Logic holds the glue
    and the process runner as members, the one shape both modules share."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    test = classes[test_class]
    calls = {n.func.id for n in ast.walk(test) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "require_steps" in calls, f"{test_class} does not check the steps it exercises"
    branches = [n.lineno for n in ast.walk(test) if isinstance(n, (ast.If, ast.IfExp))]
    assert not branches, f"{test_class} branches at lines {branches}: a missing step must fail the test"
    logic = classes[logic_class]
    assert [b.id for b in logic.bases if isinstance(b, ast.Name)] == ["ScriptedLoadableModuleLogic"]
    init = next(n for n in logic.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    members = {t.attr for n in ast.walk(init) if isinstance(n, ast.Assign) for t in n.targets
               if isinstance(t, ast.Attribute)}
    assert "runner" in members, f"{logic_class} has no process runner"


def test_self_test_fails_on_a_missing_step_and_logic_has_the_shared_shape():
    _self_test_shape(MODULE, "ProstateLesionCADTest", "ProstateLesionCADLogic")
    text = MODULE.read_text(encoding="utf-8")
    assert "_subparsers" not in text and "_actions" not in text  # capabilities come from the library's table
    for path in GLUE.glob("*.py"):
        glue = path.read_text(encoding="utf-8")
        assert "_subparsers" not in glue and "parser._actions" not in glue, path.name


def test_load_from_dicom_database_sits_with_the_load_buttons_and_is_wired(app):
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QPushButton

    form = QUiLoader().load(str(UI))
    buttons = {name: form.findChild(QPushButton, name)
               for name in ("loadDicomButton", "loadDatabaseButton", "loadSampleButton")}
    assert all(buttons.values()), buttons
    database = buttons["loadDatabaseButton"]
    assert "DICOM database" in database.text() and "DICOM UIDs" in database.toolTip()
    row = buttons["loadDicomButton"].parentWidget().layout()
    order = [row.indexOf(button) for button in buttons.values()]
    assert order == sorted(order) and min(order) >= 0, "the three load buttons share one row, in this order"
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    connects = {(ast.unparse(call.func.value), call.args[0].value, ast.unparse(call.args[1]))
                for call in ast.walk(tree) if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and call.func.attr == "connect" and len(call.args) == 2 and isinstance(call.args[0], ast.Constant)}
    assert ("self.ui.loadDatabaseButton", "clicked()", "self.onLoadFromDatabase") in connects
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ProstateLesionCADWidget")
    methods = {f.name for f in widget.body if isinstance(f, ast.FunctionDef)}
    assert {"onLoadFromDatabase", "chooseDatabaseStudy", "startStudyLoad", "onStudyLoadStep"} <= methods


ZONAL_MODULE = REPO / "ZonalSegmentation" / "ZonalSegmentation.py"
ZONAL_UI = REPO / "ZonalSegmentation" / "Resources" / "UI" / "ZonalSegmentation.ui"


def _function(path: Path, cls: str, name: str) -> str:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    klass = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    return ast.unparse(next(f for f in klass.body if isinstance(f, ast.FunctionDef) and f.name == name))


def test_pz_post_processing_controls_show_the_command_line_defaults_and_off(app):
    """Both panels' PZ controls: spin boxes starting at the command line's defaults, whose lowest value (0)
    reads "off", which the glue turns into `--pz-shell-mm off` (zonal_logic.shell_from_spin_box)."""
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QDoubleSpinBox

    from ProstateLesionCADLib.zones import ANTERIOR_BAND, PZ_SHELL_MM

    for ui in (UI, ZONAL_UI):
        form = QUiLoader().load(str(ui))
        shell = form.findChild(QDoubleSpinBox, "pzShellSpinBox")
        band = form.findChild(QDoubleSpinBox, "pzAnteriorBandSpinBox")
        assert shell is not None and band is not None, ui.name
        assert (shell.value(), band.value()) == (PZ_SHELL_MM, ANTERIOR_BAND), ui.name
        assert band.text() == "off" and shell.text() == f"{PZ_SHELL_MM:.1f} mm"
        assert shell.minimum() == band.minimum() == 0.0 and shell.maximum() >= 30 and band.maximum() >= 1.0
        shell.setValue(-5)  # the lowest value is "off"
        assert shell.value() == 0.0 and shell.text() == "off"
        assert "--pz-shell-mm" in shell.toolTip() and "--pz-anterior-band" in band.toolTip()
    # the CAD panel keeps them with the zones step
    form = QUiLoader().load(str(UI))
    steps = form.findChild(QDoubleSpinBox, "pzShellSpinBox").parentWidget()
    assert steps is form.findChild(QDoubleSpinBox, "pzAnteriorBandSpinBox").parentWidget()
    assert steps.objectName() == "stepsCollapsibleButton"
    # CAD panel: parameter node <-> widgets both ways; the zonal panel: the same node, and its Apply passes them
    gui = _function(MODULE, "ProstateLesionCADWidget", "updateGUIFromParameterNode")
    node = _function(MODULE, "ProstateLesionCADWidget", "updateParameterNodeFromGUI")
    assert "self.ui.pzShellSpinBox.value = spin_box_shell(p.pz_shell_mm)" in gui
    assert "self.ui.pzAnteriorBandSpinBox.value = p.pz_anterior_band" in gui
    assert "p.pz_shell_mm = shell_from_spin_box(self.ui.pzShellSpinBox.value)" in node
    assert "p.pz_anterior_band = self.ui.pzAnteriorBandSpinBox.value" in node
    apply = _function(ZONAL_MODULE, "ZonalSegmentationWidget", "onApply")
    assert "shell_from_spin_box(self.ui.pzShellSpinBox.value)" in apply and "pzAnteriorBandSpinBox.value" in apply
    changed = _function(ZONAL_MODULE, "ZonalSegmentationWidget", "onPzOptionsChanged")
    assert "p.pz_shell_mm = shell_from_spin_box(self.ui.pzShellSpinBox.value)" in changed
    for path, slot in ((MODULE, "self.updateParameterNodeFromGUI"), (ZONAL_MODULE, "self.onPzOptionsChanged")):
        source = path.read_text(encoding="utf-8")
        for name in ("pzShellSpinBox", "pzAnteriorBandSpinBox"):
            assert f'self.ui.{name}.connect("valueChanged(double)", {slot})' in source


def test_every_candidate_box_sits_with_the_model_and_follows_its_kind(app):
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QCheckBox, QComboBox

    form = QUiLoader().load(str(UI))
    box = form.findChild(QCheckBox, "allCandidatesCheckBox")
    assert box is not None and "every candidate" in box.text() and "FocalNet" in box.text()
    assert not box.isChecked()  # the command line's default: only the working point's candidates
    assert "working point" in box.toolTip() and "FROC" in box.toolTip()
    assert box.parentWidget() is form.findChild(QComboBox, "modelComboBox").parentWidget()
    source = MODULE.read_text(encoding="utf-8")
    assert 'self.ui.allCandidatesCheckBox.connect("toggled(bool)", self.updateParameterNodeFromGUI)' in source
    assert "p.all_candidates = self.ui.allCandidatesCheckBox.checked" in _function(
        MODULE, "ProstateLesionCADWidget", "updateParameterNodeFromGUI")
    assert "self.ui.allCandidatesCheckBox.checked = p.all_candidates" in _function(
        MODULE, "ProstateLesionCADWidget", "updateGUIFromParameterNode")
    # enabled and explained from the selected package (CadLogic.all_candidates_state), refreshed with the buttons
    states = _function(MODULE, "ProstateLesionCADWidget", "updateOptionStates")
    assert "self.cad.all_candidates_state(self.currentPackage())" in states
    assert "self.ui.allCandidatesCheckBox.enabled = enabled" in states
    assert "self.ui.allCandidatesCheckBox.toolTip = tip" in states
    assert "self.updateOptionStates()" in _function(MODULE, "ProstateLesionCADWidget", "updateButtons")
