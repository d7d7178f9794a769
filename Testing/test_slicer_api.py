"""Every Slicer/VTK/MRML name the Slicer glue uses exists in the oldest supported Slicer (5.12).

Testing/slicer_api.py collects the names from the glue's source (ProstateLesionCADSlicer/*.py
and both module files); Testing/data/slicer-5.12-api.txt lists those found in slicer-core
5.12.4.0 (vtk 9.6.0). A method called on an object is checked by name (some class of
slicer/vtk has it); the calls whose class matters, because the method is newer than the
class or shared by unrelated classes, are pinned to their class in TYPED. GUI-side names
(qt, ctk, slicer.util, slicer.app, slicer.modules, Sample Data, PyTorchUtils) are not in
the wheel: HAND_CHECKED says where each is defined in the sources of the oldest supported
release (Slicer/Slicer branch 5.12 unless stated).

Run in the slicer-core 5.12.4.0 environment (make test does), the test also regenerates the
list and compares; run with a newer slicer-core (5.13), it checks that every name still exists.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import pytest

TESTING = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTING))
sys.path.insert(0, str(TESTING.parent / "ProstateLesionCAD"))

import slicer_api  # noqa: E402
from ProstateLesionCADSlicer import slicer_version  # noqa: E402

SAMPLE_DATA = "Modules/Scripted/SampleData/SampleData.py"
UTIL = "Base/Python/slicer/util.py"
QT = "Qt 5.15 API wrapped by PythonQt (Slicer 5.12 requires Qt 5.15: CMakeLists.txt Slicer_REQUIRED_QT_VERSION)"
HAND_CHECKED = {
    "qt.QComboBox": f"{QT}; Base/Python/slicer/parameterNodeWrapper/guiCreation.py calls qt.QComboBox()",
    "qt.QFileDialog.getExistingDirectory": f"{QT}; Modules/Scripted/ExtensionWizard/ExtensionWizard.py calls it",
    "qt.QFileDialog.getOpenFileName": f"{QT} (QFileDialog::getOpenFileName)",
    "qt.QInputDialog.getText": f"{QT} (QInputDialog::getText)",
    "qt.QTableWidgetItem": f"{QT}; Modules/Scripted/DICOMLib/DICOMBrowser.py calls qt.QTableWidgetItem(...)",
    "qt.QTimer": f"{QT}; Modules/Loadable/Segmentations/EditorEffects/Python/SegmentEditorEffects/"
                 "SegmentEditorThresholdEffect.py calls qt.QTimer()",
    "qt.Qt.Checked": f"{QT}; SegmentEditorEffects/SegmentEditorHollowEffect.py reads qt.Qt.Checked",
    "qt.Qt.Unchecked": f"{QT}; SegmentEditorEffects/SegmentEditorHollowEffect.py reads qt.Qt.Unchecked",
    "qt.Qt.UserRole": f"{QT} (Qt::UserRole)",
    "slicer.mrmlScene": "Base/Python/slicerqt.py sets slicer.mrmlScene = slicer.app.mrmlScene()",
    "slicer.app.connect": "PythonQt's QObject.connect on qSlicerApplication; the startupCompleted() signal: "
                          "Base/QTCore/qSlicerCoreApplication.h; Utilities/Templates/Modules/Scripted/TemplateKey.py "
                          "connects it",
    "slicer.app.processEvents": f"{QT} (QCoreApplication::processEvents); {SAMPLE_DATA} calls "
                                "slicer.app.processEvents(...)",
    "slicer.app.majorVersion": "Base/QTCore/qSlicerCoreApplication.h Q_PROPERTY(int majorVersion ...)",
    "slicer.app.minorVersion": "Base/QTCore/qSlicerCoreApplication.h Q_PROPERTY(int minorVersion ...)",
    "slicer.modules.markups.logic": "the Markups module's logic (vtkSlicerMarkupsLogic); "
                                    "Modules/Scripted/DICOMPlugins/DICOMTID1500Plugin.py calls "
                                    "slicer.modules.markups.logic().JumpSlicesToLocation",
    "slicer.modules.SegmentEditorWidget.editor.setSegmentationNode":
        "Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.h setSegmentationNode; "
        "Modules/Scripted/SegmentEditor/SegmentEditor.py (self.editor)",
    "slicer.modules.SegmentEditorWidget.editor.setSourceVolumeNode":
        "Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.h setSourceVolumeNode(vtkMRMLNode*)",
    "slicer.ScriptedLoadableModule.ScriptedLoadableModule": "Base/Python/slicer/ScriptedLoadableModule.py",
    "slicer.ScriptedLoadableModule.ScriptedLoadableModuleLogic": "Base/Python/slicer/ScriptedLoadableModule.py",
    "slicer.ScriptedLoadableModule.ScriptedLoadableModuleTest": "Base/Python/slicer/ScriptedLoadableModule.py",
    "slicer.ScriptedLoadableModule.ScriptedLoadableModuleWidget": "Base/Python/slicer/ScriptedLoadableModule.py",
    "slicer.util.VTKObservationMixin": f"{UTIL} class VTKObservationMixin",
    "slicer.util.arrayFromVTKMatrix": f"{UTIL} def arrayFromVTKMatrix",
    "slicer.util.vtkMatrixFromArray": f"{UTIL} def vtkMatrixFromArray",
    "slicer.util.childWidgetVariables": f"{UTIL} def childWidgetVariables",
    "slicer.util.confirmOkCancelDisplay": f"{UTIL} def confirmOkCancelDisplay (returns True without a dialog "
                                          "with --testing)",
    "slicer.util.errorDisplay": f"{UTIL} def errorDisplay (only logged without a main window or with --testing)",
    "slicer.util.getModuleWidget": f"{UTIL} def getModuleWidget",
    "slicer.util.loadUI": f"{UTIL} def loadUI",
    "slicer.util.loadVolume": f"{UTIL} def loadVolume",
    "slicer.util.mainWindow": f"{UTIL} def mainWindow",
    "slicer.util.pip_install": f"{UTIL} def pip_install(requirements, **kwargs)",
    "slicer.util.selectModule": f"{UTIL} def selectModule",
    "slicer.util.setSliceViewerLayers": f"{UTIL} def setSliceViewerLayers",
    "slicer.util.startupEnvironment": f"{UTIL} def startupEnvironment",
    "slicer.util.tryWithErrorDisplay": f"{UTIL} def tryWithErrorDisplay",
    "SampleData.SampleDataLogic.registerCustomSampleDataSource":
        f"{SAMPLE_DATA} SampleDataLogic.registerCustomSampleDataSource (staticmethod; customDownloader, "
        "thumbnailFileName, checksums parameters)",
    "qt.QInputDialog": f"{QT} (QInputDialog(parent), setComboBoxItems, setTextValue, textValue, exec_); "
                       "Applications/SlicerApp/Testing/Python/WebEngine.py creates qt.QInputDialog(slicer.util.mainWindow())",
    "slicer.app.dicomDatabase": "Base/QTCore/qSlicerCoreApplication.h Q_INVOKABLE ctkDICOMDatabase* dicomDatabase() const; "
                                "Modules/Scripted/DICOM/DICOM.py sets slicer.dicomDatabase = slicer.app.dicomDatabase()",
    "slicer.modules.dicomPlugins": "Modules/Scripted/DICOMPlugins/DICOMScalarVolumePlugin.py registers "
                                   "slicer.modules.dicomPlugins['DICOMScalarVolumePlugin']; DICOMUtils.py "
                                   "getLoadablesFromFileLists instantiates slicer.modules.dicomPlugins[name]()",
    "slicer.modules.DICOMWidget.browserWidget": "Modules/Scripted/DICOM/DICOM.py DICOMWidget.browserWidget "
                                                "(a DICOMLib.SlicerDICOMBrowser, DICOMBrowser.py: useVisualDICOMBrowser, "
                                                "dicomVisualBrowser.patientView().selectedSeriesInstanceUIDs(), "
                                                "dicomBrowser.selectedItems(...)); DICOM.py reads "
                                                "slicer.modules.DICOMWidget.browserWidget",
    "ctk.ctkDICOMIndexer": "CTK 5056664a (the CTK of Slicer 5.12.3, SuperBuild/External_CTK.cmake) Libs/DICOM/Core/"
                           "ctkDICOMIndexer.h: Q_PROPERTY backgroundImportEnabled and importing, Q_INVOKABLE "
                           "addDirectory(ctkDICOMDatabase*, QString, bool), signal progress(int), slot cancel(); "
                           "Modules/Scripted/DICOMLib/DICOMProcesses.py calls ctk.ctkDICOMIndexer() and sets "
                           "backgroundImportEnabled = True",
    "ctk.ctkDICOMModel.IndexType.SeriesType": "CTK ctkDICOMModel::IndexType; Modules/Scripted/DICOMLib/DICOMBrowser.py "
                                              "toggleBrowsers passes ctk.ctkDICOMModel.IndexType.SeriesType to "
                                              "dicomBrowser.selectedItems",
    "PyTorchUtils.PyTorchUtilsLogic": "fepegar/SlicerPyTorch PyTorchUtils/PyTorchUtils.py class PyTorchUtilsLogic "
                                      "(installTorch), the PyTorch extension in EXTENSION_DEPENDS",
}
# Methods whose class matters: it must be among the 5.12 classes declaring the name.
TYPED = {
    "SetTerminology": "vtkSegment",  # zonal_logic: a segment's terminology (first shipped in Slicer 5.10)
    "SetSegmentOpacity2DFill": "vtkMRMLSegmentationDisplayNode",
    "AddSegmentFromBinaryLabelmapRepresentation": "vtkMRMLSegmentationNode",
    "SetReferenceImageGeometryParameterFromVolumeNode": "vtkMRMLSegmentationNode",
    "GetBinaryLabelmapRepresentation": "vtkMRMLSegmentationNode",
    "GetSegmentIdBySegmentName": "vtkSegmentation",
    "AddEmptySegment": "vtkSegmentation",
    "AddControlPoint": "vtkMRMLMarkupsNode",
    "GetNthControlPointPositionVector": "vtkMRMLMarkupsNode",
    "GetControlPointIndexByID": "vtkMRMLMarkupsNode",
    "SetNthControlPointPosition": "vtkMRMLMarkupsNode",
    "SetHandlesInteractive": "vtkMRMLMarkupsDisplayNode",
    "JumpSlicesToLocation": "vtkSlicerMarkupsLogic",
    "GetNthIndexValue": "vtkMRMLSequenceNode",
    "SetMatrixTransformToParent": "vtkMRMLTransformNode",
}


@pytest.fixture(scope="module")
def listed():
    return slicer_api.read_list()


@pytest.fixture(scope="module")
def used():
    return slicer_api.collect()


def test_the_list_comes_from_the_oldest_supported_slicer(listed):
    core = listed[0]
    assert core == slicer_api.OLDEST
    assert tuple(map(int, core.split(".")[:2])) == slicer_version.OLDEST_SUPPORTED


def test_every_slicer_and_vtk_name_the_glue_uses_exists_in_the_oldest_release(listed, used):
    _, attributes, methods = listed
    used_attributes, used_methods, _ = used
    assert len(used_attributes) > 30 and len(used_methods) > 100  # the collector really reads the glue
    missing = sorted(used_attributes - attributes) + sorted(used_methods - set(methods))
    assert not missing, ("not in Slicer 5.12's list (regenerate it with slicer-core 5.12.4.0: if a name is still "
                         f"missing there, the glue needs a newer Slicer): {missing}")


def test_the_list_holds_only_what_the_glue_uses(listed, used):
    _, attributes, methods = listed
    assert attributes == used[0] and set(methods) == used[1], "stale entries: regenerate the list"


def test_calls_whose_class_matters_are_declared_by_that_class_in_the_oldest_release(listed, used):
    methods = listed[2]
    for name, cls in TYPED.items():
        assert name in used[1], f"{name} is no longer used by the glue: drop it from TYPED"
        assert cls in methods[name], f"{cls}.{name} is not in Slicer 5.12 (declared by {methods[name]})"


def test_gui_side_names_are_each_checked_by_hand(used):
    gui = used[2]
    unchecked = sorted(gui - set(HAND_CHECKED))
    assert not unchecked, f"check these against Slicer 5.12's sources and add them to HAND_CHECKED: {unchecked}"
    assert set(HAND_CHECKED) <= gui, f"no longer used: {sorted(set(HAND_CHECKED) - gui)}"


def test_the_installed_slicer_core_has_every_name_and_5_12_gives_the_committed_list():
    pytest.importorskip("slicer", reason="the slicer-core wheel is a dev dependency")
    lines, missing = slicer_api.build_list()
    installed = version("slicer-core")
    assert not missing, f"slicer-core {installed} lacks: {missing}"
    if installed == slicer_api.OLDEST:
        committed = slicer_api.LIST_FILE.read_text(encoding="utf-8").splitlines()
        assert lines == committed, "the committed list differs from slicer-core 5.12.4.0: regenerate it"
