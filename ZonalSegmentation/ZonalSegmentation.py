"""ZonalSegmentation: prostate, central gland and peripheral zone of a T2, editable.

Thin by design (STYLE.md): the Widget draws the panel and runs `prostate-cad zones` as a
background child of Slicer's Python; the MRML work is in ProstateLesionCADSlicer
(tested with the slicer-core wheel), the computation in ProstateLesionCADLib.zones.
"""

import json
import logging
from pathlib import Path

import qt
import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from ProstateLesionCADLib.zones import ANTERIOR_BAND, BACKENDS, DEMO_MODEL, PZ_SHELL_MM
from ProstateLesionCADSlicer import background_process, dependencies
from ProstateLesionCADSlicer.self_test_checks import require_models, require_steps
from ProstateLesionCADSlicer.parameters import parameters
from ProstateLesionCADSlicer.zonal_logic import ZonalLogic, anterior_band_state, shell_from_spin_box, spin_box_shell

BACKEND_LABELS = {"taps": "Pretrained TAPS gland network (real MRI)", "cascade": "Cascade CNN-1 of the zones model"}
STEP_TIMEOUT_S = 1800  # the self-test's limit for the zones step on a CPU


class ZonalSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Prostate Zonal Segmentation"
        self.parent.categories = ["Prostate"]
        self.parent.dependencies = ["ProstateLesionCAD"]  # its MRML glue and library live there
        self.parent.contributors = ["ProstateLesionCAD developers (ProstateLesionCAD project)"]
        self.parent.helpText = """
Segments the prostate, its central gland (CG) and peripheral zone (PZ) on an axial T2:
the gland from the pretrained TAPS network (or the cascade's CNN-1), the CG from the
cascade's CNN-2, PZ = prostate − CG. Correct the segments in Segment Editor, then press
<b>Recompute PZ</b>. The bundled zones model is a demo trained on synthetic phantoms:
on real MRI its CG/PZ split is not validated. <b>Not for clinical use.</b>
"""
        self.parent.acknowledgementText = """
Method: Pellicer-Valero O.J. et al., Sci. Rep. 12, 2975 (2022), "Automated prostate zonal
segmentation". Gland network: TAPS (lavlab-taps, MIT licence). Sample data: ProstateX
(Litjens G. et al., TCIA 2017, doi:10.7937/K9TCIA.2017.MURS5CL), CC BY 3.0.
"""


class ZonalSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.zonal = None
        self._t2Node = None
        self._packages = []
        self._zonesOffered = False

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ZonalSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ZonalSegmentationLogic()
        self.zonal = self.logic.zonal

        zones = self.zonal.capabilities.get("zones")
        backendOption = zones.option("--backend") if zones is not None else None
        for value in (backendOption.choices if backendOption is not None else ()):
            self.ui.backendComboBox.addItem(BACKEND_LABELS.get(value, value), value)
        self.ui.progressBar.setRange(0, 100)
        self.ui.cancelButton.enabled = False
        self.ui.installDependenciesButton.connect("clicked()", self.onInstallDependencies)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.applyButton.connect("clicked()", self.onApply)
        self.ui.cancelButton.connect("clicked()", self.onCancel)
        self.ui.editButton.connect("clicked()", self.onEdit)
        self.ui.recomputePzButton.connect("clicked()", self.onRecomputePz)
        self.ui.exportLabelmapButton.connect("clicked()", self.onExportLabelmap)
        self.ui.exportTrainingButton.connect("clicked()", self.onExportTraining)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.showReport)
        self.ui.pzShellSpinBox.connect("valueChanged(double)", self.onPzOptionsChanged)
        self.ui.pzAnteriorBandSpinBox.connect("valueChanged(double)", self.onPzOptionsChanged)
        self._showingPzOptions = False
        self._timer = qt.QTimer()
        self._timer.setInterval(background_process.POLL_MS)
        self._timer.connect("timeout()", self.onPoll)
        self.refreshAvailability()
        self.refreshModels()
        self.showPzOptions()

    def cleanup(self):
        self._timer.stop()
        self.logic.runner.stop()
        self.removeObservers()

    def enter(self):
        self.showPzOptions()

    # ------------------------------------------------------------ PZ post-processing (shared with the CAD panel)

    def showPzOptions(self):
        """The PZ post-processing as the scene's ProstateLesionCAD parameter node holds it: both panels make
        one zones node per T2, with the same settings, saved with the scene."""
        p = parameters(slicer.mrmlScene)
        self._showingPzOptions = True
        try:
            self.ui.pzShellSpinBox.value = spin_box_shell(p.pz_shell_mm)
            self.ui.pzAnteriorBandSpinBox.value = p.pz_anterior_band
        finally:
            self._showingPzOptions = False
        self.updatePzOptionStates()

    def onPzOptionsChanged(self, value=None):
        if not self._showingPzOptions:
            p = parameters(slicer.mrmlScene)
            p.pz_shell_mm = shell_from_spin_box(self.ui.pzShellSpinBox.value)
            p.pz_anterior_band = self.ui.pzAnteriorBandSpinBox.value
        self.updatePzOptionStates()

    def updatePzOptionStates(self):
        enabled, tip = anterior_band_state(shell_from_spin_box(self.ui.pzShellSpinBox.value))
        self.ui.pzAnteriorBandSpinBox.enabled = enabled
        self.ui.pzAnteriorBandSpinBox.toolTip = tip

    # ------------------------------------------------------------ Python packages

    def refreshAvailability(self):
        """Apply is offered once the packages the zones step needs are installed (found without
        importing them); until then the panel says what is missing above the install button."""
        self._zonesOffered, tip = self.zonal.step_availability()["zones"]
        running = self.logic.runner.running
        self.ui.applyButton.enabled = self._zonesOffered and not running
        self.ui.applyButton.toolTip = tip
        summary = dependencies.missing_summary(["zones"])
        self.ui.dependenciesLabel.text = summary
        self.ui.dependenciesLabel.visible = bool(summary)
        self.ui.installDependenciesButton.visible = bool(summary)
        self.ui.installDependenciesButton.enabled = not running

    def onInstallDependencies(self):
        self.ui.installDependenciesButton.enabled = False
        self.ui.applyButton.enabled = False
        try:
            dependencies.install_from_panel(["zones"], self.ui.progressBar, self.ui.dependenciesLabel)
        finally:
            self.refreshAvailability()

    # ------------------------------------------------------------ models and their cards

    def refreshModels(self):
        from ProstateLesionCADLib.models.package import installed_packages

        self._packages = installed_packages(task="zones")
        self.ui.modelComboBox.clear()
        for package in self._packages:
            self.ui.modelComboBox.addItem(f"{package.name} {package.version}", str(package.root))
        if not self._packages:
            self.ui.modelCardLabel.text = "No zones model is installed (see prostate-cad models install)."

    def onModelChanged(self, index):
        if not 0 <= index < len(self._packages):
            return
        card = self._packages[index].card
        dice = (card.get("training") or {}).get("validation_dice") or {}
        scores = ", ".join(f"{k} {v:.2f}" for k, v in dice.items())
        self.ui.modelCardLabel.text = (f"<b>{card['name']}</b> {card['version']}<br>{card.get('intended_use', '')}"
                                       f"<br>Training data: {card.get('training_data', 'not stated')}"
                                       + (f"<br>Validation Dice: {scores}" if scores else ""))
        synthetic = "synthetic" in str(card.get("intended_use", "")).lower()
        self.ui.syntheticWarningLabel.text = ("⚠ Trained on synthetic data — not for diagnosis; on real MRI the "
                                              "central-gland split is not validated: check and correct it."
                                              if synthetic else "")

    # ------------------------------------------------------------ background run

    def onApply(self):
        with slicer.util.tryWithErrorDisplay("Zonal segmentation could not start.", waitCursor=True):
            t2 = self.ui.t2Selector.currentNode()
            index = self.ui.modelComboBox.currentIndex
            model = self.ui.modelComboBox.itemData(index) if index >= 0 else DEMO_MODEL
            backend = self.ui.backendComboBox.currentData or BACKENDS[0]
            self.logic.start(t2, backend, model, shell_from_spin_box(self.ui.pzShellSpinBox.value),
                             self.ui.pzAnteriorBandSpinBox.value)
            self._t2Node = t2
            self.ui.applyButton.enabled = False
            self.ui.installDependenciesButton.enabled = False
            self.ui.cancelButton.enabled = True
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "Starting…"
            self._timer.start()

    def onPoll(self):
        update = self.logic.runner.poll()
        if update is None:
            self._timer.stop()
            return
        if update.percent is not None:
            self.ui.progressBar.value = int(update.percent)
            self.ui.statusLabel.text = update.message
        if not update.finished:
            return
        self._timer.stop()
        self.ui.applyButton.enabled = self._zonesOffered
        self.ui.installDependenciesButton.enabled = True
        self.ui.cancelButton.enabled = False
        try:
            if update.state == background_process.SUCCEEDED:
                with slicer.util.tryWithErrorDisplay("Could not read the zonal segmentation.", waitCursor=True):
                    node, _ = self.zonal.load_result(update.out_dir, self._t2Node)
                    self.ui.segmentationSelector.setCurrentNode(node)
                    self.ui.statusLabel.text = "Zones ready: correct them in Segment Editor if needed."
            else:
                self.ui.statusLabel.text = update.status_text()
                if update.state == background_process.FAILED:
                    slicer.util.errorDisplay(f"Zonal segmentation failed: {update.error}",
                                             detailedText="\n".join(update.log))
        finally:
            update.cleanup()

    def onCancel(self):
        self.logic.runner.cancel()

    # ------------------------------------------------------------ corrections and export

    def showReport(self, node=None):
        report = json.loads(node.GetAttribute("ZonalSegmentation.Report") or "{}") if node else {}
        volumes = report.get("volumes_cm3") or {}
        self.ui.volumesLabel.text = ", ".join(f"{k.replace('_', ' ')} {v:.1f} cm³" for k, v in volumes.items())
        flags = (report.get("qc") or {}).get("flags") or []
        self.ui.qcLabel.text = "\n".join(f"QC: {f}" for f in flags + report.get("warnings", []))

    def onEdit(self):
        node = self.ui.segmentationSelector.currentNode()
        slicer.util.selectModule("SegmentEditor")
        if node is not None:
            slicer.modules.SegmentEditorWidget.editor.setSegmentationNode(node)
            slicer.modules.SegmentEditorWidget.editor.setSourceVolumeNode(self.ui.t2Selector.currentNode())

    def onRecomputePz(self):
        with slicer.util.tryWithErrorDisplay("Could not recompute the peripheral zone.", waitCursor=True):
            counts = self.zonal.recompute_pz(self.ui.segmentationSelector.currentNode(),
                                             self.ui.t2Selector.currentNode())
            note = (f" ({counts['cg_outside_prostate']} central-gland voxels lie outside the prostate: extend the "
                    "Prostate segment)" if counts["cg_outside_prostate"] else "")
            self.ui.statusLabel.text = f"Peripheral zone recomputed: {counts['pz']} voxels{note}."

    def onExportLabelmap(self):
        with slicer.util.tryWithErrorDisplay("Could not export the label map.", waitCursor=True):
            node = self.zonal.export_labelmap(self.ui.segmentationSelector.currentNode(), self.ui.t2Selector.currentNode())
            self.ui.statusLabel.text = f"Label map '{node.GetName()}' created (1 = CG, 2 = PZ)."

    def onExportTraining(self):
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Folder for training pairs")
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay("Could not export the training pair.", waitCursor=True):
            t2 = self.ui.t2Selector.currentNode()
            paths = self.zonal.export_training_pair(self.ui.segmentationSelector.currentNode(), t2, Path(folder),
                                                          t2.GetName())
            self.ui.statusLabel.text = f"Wrote {paths[0].name} and {paths[1].name} to {folder}."


class ZonalSegmentationLogic(ScriptedLoadableModuleLogic):
    """The module's logic: the MRML glue (`zonal`, a ZonalLogic) on the application's scene (or a
    given one) and the runner of its background step. ProstateLesionCADLogic has the same shape."""

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.zonal = ZonalLogic(scene if scene is not None else slicer.mrmlScene)
        self.runner = background_process.ProcessRunner()

    def start(self, t2Node, backend=BACKENDS[0], model=DEMO_MODEL, pzShellMm=PZ_SHELL_MM, pzAnteriorBand=ANTERIOR_BAND):
        """Start `prostate-cad zones` on the T2 volume in the background (pzShellMm None: that step off)."""
        return self.runner.start("zones", lambda work: self.zonal.zones_command(
            t2Node, work, backend, model, pz_shell_mm=pzShellMm, pz_anterior_band=pzAnteriorBand))

    def run(self, t2Node, backend=BACKENDS[0], model=DEMO_MODEL, timeout=STEP_TIMEOUT_S):
        """Blocking run (self-test, scripts): returns the T2's zones segmentation node."""
        self.start(t2Node, backend, model)
        update = self.runner.wait(timeout)
        try:
            if update.state != background_process.SUCCEEDED:
                raise RuntimeError(f"prostate-cad zones failed: {update.error}")
            return self.zonal.load_result(update.out_dir, t2Node)[0]
        finally:
            update.cleanup()


class ZonalSegmentationTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_zones_on_sample()

    def test_zones_on_sample(self):
        """The bundled sample's T2 -> three segments; PZ recompute keeps prostate = CG + PZ.
        Fails when this installation has no zones step or no zones model."""
        from ProstateLesionCADLib.models.package import installed_packages
        from ProstateLesionCADLib.resources import sample_case_dir

        logic = ZonalSegmentationLogic()
        require_steps(logic.zonal.step_availability(), ["zones"])
        require_models(installed_packages(task="zones"), "zones")
        t2Path = Path(sample_case_dir()) / "t2.nrrd"
        t2Node = slicer.util.loadVolume(str(t2Path))
        node = logic.run(t2Node)  # the default backend: the pretrained TAPS gland network
        segmentation = node.GetSegmentation()
        self.assertEqual(segmentation.GetNumberOfSegments(), 3)
        counts = logic.zonal.recompute_pz(node, t2Node)
        self.assertGreater(counts["prostate"], 0)
        self.assertEqual(counts["pz"] + counts["cg"] - counts["cg_outside_prostate"], counts["prostate"])
        logging.info("ZonalSegmentation self-test passed: %s", counts)
