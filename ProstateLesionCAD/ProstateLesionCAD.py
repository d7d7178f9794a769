"""ProstateLesionCAD: the radiologist's panel, from a study to GGG-coloured lesions.

Thin by design (STYLE.md): the Widget draws the panel and runs steps as background
`prostate-cad` processes; all MRML work is in ProstateLesionCADSlicer (tested with the
slicer-core wheel), all computation in ProstateLesionCADLib (plain Python).
"""

import logging
from pathlib import Path

import ctk
import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from ProstateLesionCADLib import ggg_palette, requirements
from ProstateLesionCADLib.errors import CaseError
from ProstateLesionCADLib.models import catalog as model_catalog
from ProstateLesionCADLib.study.case_json import read_case_json
from ProstateLesionCADSlicer import (annotate_growing, background_process, dependencies, dicom_database, dicom_export,
                                     sample_data, self_test_steps, slicer_version)
from ProstateLesionCADSlicer.annotate_logic import TABLE_COLUMNS as SEED_COLUMNS, AnnotateLogic
from ProstateLesionCADSlicer.cad_logic import OFFERED_STEPS, PANEL_STEPS, CadLogic
from ProstateLesionCADSlicer.parameters import CRITERIA, get_parameter_node
from ProstateLesionCADSlicer.self_test_checks import require_models, require_steps
from ProstateLesionCADSlicer.zonal_logic import anterior_band_state, shell_from_spin_box, spin_box_shell

REGROW_DEBOUNCE_MS = 500  # a dragged seed re-grows once it has rested this long
DEVICE_LABELS = {"auto": "Automatic", "cpu": "CPU", "cuda": "GPU"}
STEP_TIMEOUT_S = 3600  # the self-test's limit for one step on a CPU


class ProstateLesionCAD(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Prostate Lesion CAD"
        self.parent.categories = ["Prostate"]
        self.parent.dependencies = []
        self.parent.contributors = ["ProstateLesionCAD developers (ProstateLesionCAD project)"]
        self.parent.helpText = """
Finds and grades prostate lesions in multiparametric MRI: registration of ADC/DWI to T2,
zonal segmentation, and a 3D Retina U-Net detector whose lesions are shown as segments,
boxes and a table, coloured by Gleason grade group. <b>Not for clinical use</b>; the
bundled models are demos trained on synthetic data.
See <a href="https://github.com/ProstateLesionCAD/ProstateLesionCAD#the-slicer-panel">the documentation</a>.
"""
        self.parent.acknowledgementText = """
Methods: Pellicer-Valero O.J. et al., "Deep learning for fully automatic detection,
segmentation, and Gleason grade estimation of prostate cancer in multiparametric magnetic
resonance images", Sci. Rep. 12, 2975 (2022); Cao R. et al., "Joint prostate cancer
detection and Gleason score prediction in mp-MRI via FocalNet", IEEE TMI 38(11) (2019).
Sample data: ProstateX (Litjens G. et al., TCIA 2017, doi:10.7937/K9TCIA.2017.MURS5CL), CC BY 3.0.
"""
        # Once Slicer has started, the Sample Data module exists and a message can be shown.
        slicer.app.connect("startupCompleted()", self.onStartupCompleted)

    def onStartupCompleted(self):
        """One message on a Slicer older than the oldest supported release; else offer the sample."""
        message = slicer_version.unsupported_message(slicer.app.majorVersion, slicer.app.minorVersion)
        if message:
            slicer.util.errorDisplay(message)  # only logged without a main window or under --testing
            return
        import SampleData

        sample_data.register(SampleData.SampleDataLogic.registerCustomSampleDataSource, ProstateLesionCAD.loadSample)

    @staticmethod
    def loadSample(source=None):
        """Sample Data's ProstateX-0000 button: the study with its roles in the panel's selectors, T2 shown."""
        created = sample_data.load_sample(CadLogic(slicer.mrmlScene))
        slicer.util.setSliceViewerLayers(background=created["T2"], fit=True)
        return created


class ProstateLesionCADWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.cad = None
        self._parameterNode = None
        self._updatingGUI = False
        self._packages = []
        self.annotateLogic = None
        self.growQueue = None  # lesion growing in the background, one grow at a time
        self._seedsNode = None
        self._availability = {}  # step -> (offered?, tooltip), refreshed when packages get installed
        self._installing = False
        self._deviceProbe = None
        self._studyLoad = None  # a study being loaded from the DICOM database, one series per timer tick
        self._dicomSource = None  # what the classification ran on: a folder or the database's file list
        self._dicomPlan = None
        self._studySteps = []
        self._dicomImport = None  # a folder being imported into the DICOM database (indexer's thread)
        self._afterImport = None  # what follows once it is indexed (or stopped)
        self._importLabel = None  # the status line it reports in

    # ------------------------------------------------------------ set-up

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ProstateLesionCAD.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ProstateLesionCADLogic()
        self.cad = self.logic.cad

        self._roleSelectors = {"T2": self.ui.t2Selector, "ADC": self.ui.adcSelector, "DWI_LOW": self.ui.dwiLowSelector,
                               "DWI_HIGH": self.ui.dwiHighSelector, "KTRANS": self.ui.ktransSelector}
        for selector in self._roleSelectors.values():
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        self.ui.dceSelector.connect("checkedNodesChanged()", self.updateParameterNodeFromGUI)
        for k in CRITERIA:
            self.ui.criterionComboBox.addItem(f"GGG≥{k}", k)
        detection = self.cad.capabilities.get("detection")
        deviceOption = detection.option("--device") if detection is not None else None
        for value in (deviceOption.choices if deviceOption is not None else ()):
            self.ui.deviceComboBox.addItem(DEVICE_LABELS.get(value, value), value)
        self.ui.legendLabel.text = "  ".join(
            f'<span style="color:{c.hex}">&#9632;</span> {c.name} ({c.description})' for c in ggg_palette.PALETTE.values())
        self.ui.progressBar.setRange(0, 100)
        self.ui.cancelButton.enabled = False

        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.updateParameterNodeFromGUI)
        self.ui.allCandidatesCheckBox.connect("toggled(bool)", self.updateParameterNodeFromGUI)
        self.ui.pzShellSpinBox.connect("valueChanged(double)", self.updateParameterNodeFromGUI)
        self.ui.pzAnteriorBandSpinBox.connect("valueChanged(double)", self.updateParameterNodeFromGUI)
        self.ui.criterionComboBox.connect("currentIndexChanged(int)", self.onFilterChanged)
        self.ui.thresholdSlider.connect("valueChanged(double)", self.onFilterChanged)
        self.ui.maxSensitivityButton.connect("clicked()", lambda: self.onPreset("max_sensitivity"))
        self.ui.balancedButton.connect("clicked()", lambda: self.onPreset("balanced"))
        self.ui.loadDicomButton.connect("clicked()", self.onLoadDicom)
        self.ui.loadDatabaseButton.connect("clicked()", self.onLoadFromDatabase)
        self.ui.loadSampleButton.connect("clicked()", lambda: self.loadStudy(None))
        self.ui.installFromFileButton.connect("clicked()", self.onInstallFromFile)
        self.ui.installFromUrlButton.connect("clicked()", self.onInstallFromUrl)
        self.ui.registrationButton.connect("clicked()", lambda: self.startStep("registration"))
        self.ui.resetRegistrationButton.connect("clicked()", self.onResetRegistration)
        self.ui.zonesButton.connect("clicked()", lambda: self.startStep("zones"))
        self.ui.detectButton.connect("clicked()", lambda: self.startStep("detection"))
        self.ui.loadDetectionsButton.connect("clicked()", self.onLoadDetections)
        self.ui.exportDicomButton.connect("clicked()", self.onExportToDatabase)
        self.ui.cancelButton.connect("clicked()", self.onCancel)
        self.ui.installDependenciesButton.connect("clicked()", self.onInstallDependencies)
        self.ui.lesionTableView.connect("clicked(QModelIndex)", self.onTableClicked)

        self.annotateLogic = AnnotateLogic(slicer.mrmlScene)
        self.growQueue = annotate_growing.GrowQueue(self.annotateLogic)
        self.ui.seedsTableWidget.setColumnCount(len(SEED_COLUMNS))
        self.ui.seedsTableWidget.setHorizontalHeaderLabels(list(SEED_COLUMNS))
        self.ui.seedsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSeedsNodeChanged)
        self.ui.seedsTableWidget.connect("cellClicked(int,int)", self.onSeedRowClicked)
        self.ui.growButton.connect("clicked()", self.onGrow)
        self.ui.regrowSelectedButton.connect("clicked()", self.onRegrowSelected)
        self.ui.exportAnnotationButton.connect("clicked()", self.onExportAnnotation)
        self._regrowTimer = qt.QTimer()
        self._regrowTimer.setSingleShot(True)
        self._regrowTimer.setInterval(REGROW_DEBOUNCE_MS)
        self._regrowTimer.connect("timeout()", self.onSeedsSettled)
        self._growTimer = qt.QTimer()
        self._growTimer.setInterval(background_process.POLL_MS)
        self._growTimer.connect("timeout()", self.onGrowPoll)

        self._timer = qt.QTimer()
        self._timer.setInterval(background_process.POLL_MS)
        self._timer.connect("timeout()", self.onPoll)
        self._deviceTimer = qt.QTimer()
        self._deviceTimer.setInterval(background_process.POLL_MS)
        self._deviceTimer.connect("timeout()", self.onDeviceProbe)
        self._studyLoadTimer = qt.QTimer()
        self._studyLoadTimer.setInterval(0)  # one series per pass of the event loop
        self._studyLoadTimer.connect("timeout()", self.onStudyLoadStep)
        self._importTimer = qt.QTimer()
        self._importTimer.setInterval(background_process.POLL_MS)
        self._importTimer.connect("timeout()", self.onDicomImportPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.refreshModels()
        self.refreshAvailability()
        self.initializeParameterNode()

    def cleanup(self):
        self._timer.stop()
        self.stopDicomImport(cancel=True)
        self.stopStudyLoad()
        self.logic.runner.stop()
        self.cad.forget_kept_run()
        self.stopDeviceProbe()
        self._regrowTimer.stop()
        self._growTimer.stop()
        self.growQueue.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        self.stopStudyLoad()
        self._growTimer.stop()
        self.growQueue.stop()  # its seeds and segments are going
        self.setParameterNode(None)
        self.ui.seedsSelector.setCurrentNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ------------------------------------------------------------ parameter node <-> GUI

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, node):
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = node
        if node is not None:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        if self._parameterNode is None or self._updatingGUI:
            return
        self._updatingGUI = True
        try:
            p = self.cad.params
            for role, selector in self._roleSelectors.items():
                selector.setCurrentNode(p.input(role))
            checked = {n.GetID() for n in p.dce if n is not None}
            for i in range(self.ui.dceSelector.nodeCount()):
                node = self.ui.dceSelector.nodeFromIndex(i)
                self.ui.dceSelector.setCheckState(node, qt.Qt.Checked if node.GetID() in checked else qt.Qt.Unchecked)
            index = self.ui.modelComboBox.findText(p.model)
            if index >= 0:
                self.ui.modelComboBox.currentIndex = index
            self.ui.deviceComboBox.currentIndex = max(0, self.ui.deviceComboBox.findData(p.device))
            self.ui.criterionComboBox.currentIndex = max(0, self.ui.criterionComboBox.findData(p.min_ggg))
            self.ui.thresholdSlider.value = p.score_threshold
            self.ui.allCandidatesCheckBox.checked = p.all_candidates
            self.ui.pzShellSpinBox.value = spin_box_shell(p.pz_shell_mm)
            self.ui.pzAnteriorBandSpinBox.value = p.pz_anterior_band
            self.ui.lesionTableView.setMRMLTableNode(p.lesion_table)
            self.updateButtons()
        finally:
            self._updatingGUI = False

    def updateParameterNodeFromGUI(self, *args):
        if self._parameterNode is None or self._updatingGUI:
            return
        wasModified = self._parameterNode.StartModify()
        p = self.cad.params
        for role, selector in self._roleSelectors.items():
            p.set_input(role, selector.currentNode())
        p.dce = list(self.ui.dceSelector.checkedNodes())
        p.device = self.ui.deviceComboBox.currentData
        p.model = self.ui.modelComboBox.currentText if self.ui.modelComboBox.count else ""
        p.all_candidates = self.ui.allCandidatesCheckBox.checked
        p.pz_shell_mm = shell_from_spin_box(self.ui.pzShellSpinBox.value)
        p.pz_anterior_band = self.ui.pzAnteriorBandSpinBox.value
        self._parameterNode.EndModify(wasModified)
        self.updateOptionStates()

    def updateButtons(self):
        """Offer only what the library can do now, and say why when it cannot."""
        running = (self.logic.runner.running or self._installing or self._studyLoad is not None
                   or self._dicomImport is not None)
        availability = self._availability or self.cad.step_availability()
        hasT2 = self.cad.params.t2 is not None
        for step, button in (("registration", self.ui.registrationButton), ("zones", self.ui.zonesButton),
                             ("detection", self.ui.detectButton)):
            offered, tip = availability[step]
            ready = offered and hasT2 and not running and (step != "detection" or bool(self._packages))
            button.enabled = ready
            button.toolTip = tip if not offered else (tip if hasT2 else "Select a T2 volume first.")
        offered, tip = availability[dicom_export.STEP]  # highdicom installed?
        if offered:
            offered, tip = dicom_export.export_availability(self.cad.params, self.dicomDatabase() is not None)
        self.ui.exportDicomButton.enabled = offered and not running
        self.ui.exportDicomButton.toolTip = tip
        self.ui.resetRegistrationButton.enabled = self.cad.params.registration_transform is not None and not running
        self.ui.cancelButton.enabled = (self.logic.runner.running or self._dicomImport is not None
                                        or (self.growQueue is not None and self.growQueue.running))
        self.ui.installDependenciesButton.enabled = not running
        self.updatePresetButtons()
        self.updateAnnotateButtons()
        self.updateOptionStates()

    def updateOptionStates(self):
        """"Write every candidate" only for a FocalNet model, the anterior band only with the PZ shell step;
        each disabled one says why in its tooltip."""
        enabled, tip = self.cad.all_candidates_state(self.currentPackage())
        self.ui.allCandidatesCheckBox.enabled = enabled
        self.ui.allCandidatesCheckBox.toolTip = tip
        enabled, tip = anterior_band_state(shell_from_spin_box(self.ui.pzShellSpinBox.value))
        self.ui.pzAnteriorBandSpinBox.enabled = enabled
        self.ui.pzAnteriorBandSpinBox.toolTip = tip

    # ------------------------------------------------------------ models, device, presets

    def refreshModels(self):
        self._packages = self.cad.detector_models()
        self.ui.modelComboBox.clear()
        for package in self._packages:
            self.ui.modelComboBox.addItem(package.name)
        if not self._packages:
            self.ui.modelCardLabel.text = "No detector model installed: install one from a file or a URL."

    def currentPackage(self):
        index = self.ui.modelComboBox.currentIndex
        return self._packages[index] if 0 <= index < len(self._packages) else None

    def onModelChanged(self, index=None):
        package = self.currentPackage()
        if package is not None:
            self.ui.modelCardLabel.text = model_catalog.model_card_text(package).replace("\n", "<br>")
        self.updateParameterNodeFromGUI()
        self.updatePresetButtons()

    # ------------------------------------------------------------ Python packages and devices

    def refreshAvailability(self):
        """Which steps can run with the packages installed now (found without importing them);
        what is missing is shown above the steps with the button that installs it."""
        self._availability = self.cad.step_availability()
        summary = dependencies.missing_summary(OFFERED_STEPS)
        self.ui.dependenciesLabel.text = summary
        self.ui.dependenciesLabel.visible = bool(summary)
        self.ui.installDependenciesButton.visible = bool(summary)
        self.startDeviceProbe()
        self.updateButtons()

    def onInstallDependencies(self):
        self._installing = True  # the steps wait: pip processes events while it installs
        self.updateButtons()
        try:
            dependencies.install_from_panel(OFFERED_STEPS, self.ui.progressBar, self.ui.dependenciesLabel)
        finally:
            self._installing = False
            self.refreshAvailability()

    def startDeviceProbe(self):
        """List the compute devices in a background process (it imports torch, Slicer never does)."""
        if self._deviceProbe is not None:
            return
        if any(p.via_pytorch for p in requirements.missing_packages(["detection"])):
            self.ui.deviceInfoLabel.text = "The devices are listed once PyTorch is installed."
            return
        self.ui.deviceInfoLabel.text = "Looking for devices…"
        self._deviceProbe = background_process.start_device_probe()
        self._deviceTimer.start()

    def onDeviceProbe(self):
        probe = self._deviceProbe
        result = probe.poll() if probe is not None else None
        if result is None or result.state == background_process.RUNNING:
            return
        lines = [line for line in probe.log if line.strip()]
        self.ui.deviceInfoLabel.text = ("Found: " + lines[-1] if result.state == background_process.SUCCEEDED
                                        else f"The devices could not be listed: {result.error}")
        self.stopDeviceProbe()

    def stopDeviceProbe(self):
        self._deviceTimer.stop()
        probe, self._deviceProbe = self._deviceProbe, None
        if probe is not None:
            probe.cancel()
            probe.cleanup()

    def updatePresetButtons(self):
        presets = self.cad.model_presets(self.currentPackage(), self.cad.params.min_ggg)
        for key, button in (("max_sensitivity", self.ui.maxSensitivityButton), ("balanced", self.ui.balancedButton)):
            button.enabled = presets is not None
            button.toolTip = (f"Score threshold {presets[key]:.2f} from the model package ({self.cad.params.criterion})."
                              if presets else f"The selected model has no working points for {self.cad.params.criterion}.")

    def onPreset(self, key):
        presets = self.cad.model_presets(self.currentPackage(), self.cad.params.min_ggg)
        if presets:
            self.ui.thresholdSlider.value = presets[key]

    def onFilterChanged(self, *args):
        if self._updatingGUI:
            return
        self.cad.apply_filter(self.ui.criterionComboBox.currentData, self.ui.thresholdSlider.value)
        self.updatePresetButtons()

    def onTableClicked(self, index):
        center = self.cad.lesion_center(index.row())
        if center is not None:
            slicer.modules.markups.logic().JumpSlicesToLocation(*center, True)

    # ------------------------------------------------------------ inputs

    def onLoadDicom(self):
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "DICOM study folder")
        if not folder:
            return
        if (Path(folder) / "case.json").is_file():
            self.loadStudy(folder)  # image files with their roles: no DICOM to import
            return
        with slicer.util.tryWithErrorDisplay("Could not import the DICOM folder.", waitCursor=True):
            database = self.dicomDatabase()
            if database is None:  # no DICOM database yet: the project's loader reads the folder
                self.loadStudy(folder)
                return
            # indexed in the indexer's own thread; the classification starts once it is done
            self.startDatabaseImport(lambda indexer: dicom_database.DatabaseImport(indexer, database, folder),
                                     lambda job: None if job.cancelled else self.startDicomLoad(job.folder),
                                     self.ui.inputStatusLabel,
                                     "Importing the folder into the DICOM database…")

    def startDatabaseImport(self, start, after, label, text):
        """Index files into the DICOM database in the indexer's thread (`start(indexer)` gives the
        DatabaseImport); `after(job)` runs once it is done or stopped (job.cancelled)."""
        indexer = ctk.ctkDICOMIndexer()
        indexer.connect("progress(int)", self.onDicomImportProgress)
        self._dicomImport, self._afterImport = start(indexer), after
        self._importLabel = label
        self.ui.progressBar.value = 0
        label.text = text
        self._importTimer.start()
        self.updateButtons()

    def onDicomImportProgress(self, percent):
        self.ui.progressBar.value = percent

    def onDicomImportPoll(self):
        dicomImport = self._dicomImport
        if dicomImport is None or not dicomImport.finished:
            return
        after = self._afterImport
        self.stopDicomImport()
        if dicomImport.cancelled:
            self._importLabel.text = "Import stopped; the files indexed so far stay in the DICOM database."
        with slicer.util.tryWithErrorDisplay("Could not go on after the import into the DICOM database.",
                                             waitCursor=True):
            after(dicomImport)
        self.updateButtons()

    def onCancelDicomImport(self):
        """Stop what the indexer still has queued; the poll lets it go once its thread is done (destroying
        a ctkDICOMIndexer waits for its thread)."""
        self._dicomImport.cancel()
        self._importLabel.text = "Stopping the import…"

    def stopDicomImport(self, cancel=False):
        self._importTimer.stop()
        dicomImport, self._dicomImport, self._afterImport = self._dicomImport, None, None
        if cancel and dicomImport is not None:
            dicomImport.cancel()

    @staticmethod
    def dicomDatabase():
        """Slicer's DICOM database when it is open, else None."""
        database = slicer.app.dicomDatabase()
        return database if database is not None and database.isOpen else None

    def onLoadFromDatabase(self):
        with slicer.util.tryWithErrorDisplay("Could not load the study from the DICOM database.", waitCursor=True):
            database = self.dicomDatabase()
            if database is None:
                raise RuntimeError("Slicer's DICOM database is not open: open the DICOM module to create or choose one.")
            studyUid = self.chooseDatabaseStudy(database)
            if studyUid:
                self.startDicomLoad(dicom_database.study_files(database, studyUid))

    @staticmethod
    def dicomBrowserSeries():
        """The series selected in the DICOM module's browser; none before that module was opened."""
        try:
            browser = slicer.modules.DICOMWidget.browserWidget
        except AttributeError:  # the DICOM module's widget is made when the module is first opened
            return []
        if browser is None:
            return []
        if getattr(browser, "useVisualDICOMBrowser", False):  # set once the DICOM module chose its browser
            return list(browser.dicomVisualBrowser.patientView().selectedSeriesInstanceUIDs())
        return list(browser.dicomBrowser.selectedItems(ctk.ctkDICOMModel.IndexType.SeriesType))

    def chooseDatabaseStudy(self, database):
        """The user's pick among the database's studies. Offered first: the study of the series selected
        in the DICOM module's browser, else that of the T2 in the selector when it came from DICOM."""
        studies = dicom_database.database_studies(database)
        if not studies:
            raise RuntimeError("Slicer's DICOM database holds no study: import one in the DICOM module or with "
                               "'Load DICOM study…'.")
        current = dicom_database.study_of_series(database, self.dicomBrowserSeries())
        t2 = self.ui.t2Selector.currentNode()
        if current is None and t2 is not None and t2.GetAttribute(dicom_database.INSTANCE_UIDS_ATTRIBUTE):
            try:
                current = dicom_database.study_of_volume(database, t2)
            except CaseError:  # loaded from files the database no longer holds: no study to offer first
                current = None
        studies.sort(key=lambda entry: entry.uid != current)
        dialog = qt.QInputDialog(slicer.util.mainWindow())
        dialog.setWindowTitle("Load from DICOM database")
        dialog.setLabelText("Study:")
        dialog.setComboBoxItems([entry.label for entry in studies])
        dialog.setTextValue(studies[0].label)
        if not dialog.exec_():
            return None
        return next((entry.uid for entry in studies if entry.label == dialog.textValue()), None)

    def startDicomLoad(self, source):
        """Classify a study (a folder, or the files the DICOM database lists) in the background."""
        self._dicomSource, self._dicomPlan = source, None
        self.launch("dicom", lambda work: dicom_database.classify_command(source, work))

    def onDicomClassified(self, plan):
        """Series the plugin cannot read from their files are first read by the project's loader, in the background."""
        if dicom_database.needs_export(plan):
            self._dicomPlan = plan
            self.launch("dicom-export", lambda work: dicom_database.export_command(self._dicomSource, work))
        else:
            self.startStudyLoad(plan)

    def startStudyLoad(self, plan, exported=None):
        """Load the classified study's series through Slicer's DICOM plugin, one per timer tick."""
        self._studyLoad = dicom_database.StudyLoad(self.cad, plan, dicom_database.dicom_plugin_loader(), exported)
        self._studySteps = list(self._studyLoad.steps)
        self._studyLoadTimer.start()
        self.updateButtons()

    def onStudyLoadStep(self):
        loading = self._studyLoad
        if loading is None or not self._studySteps:
            self.stopStudyLoad()
            self.updateButtons()
            return
        name, step = self._studySteps.pop(0)
        self.ui.inputStatusLabel.text = f"Loading {name}…"
        try:
            step()
        except Exception as exc:
            logging.exception("ProstateLesionCAD: loading %s failed", name)
            loading.abort()
            self.stopStudyLoad()
            self.ui.inputStatusLabel.text = ""
            self.updateButtons()
            slicer.util.errorDisplay(f"Could not load {name} from the DICOM database: {exc}")
            return
        if not self._studySteps:
            self.stopStudyLoad()
            self.ui.inputStatusLabel.text = loading.result.summary()
            slicer.util.setSliceViewerLayers(background=self.cad.params.t2, fit=True)
            self.updateButtons()

    def stopStudyLoad(self):
        self._studyLoadTimer.stop()
        self._studyLoad, self._studySteps = None, []

    def loadStudy(self, path):
        """A DICOM folder or case file; None: the bundled sample, loaded as Sample Data loads it."""
        with slicer.util.tryWithErrorDisplay("Could not load the study.", waitCursor=True):
            created = self.cad.load_study(path) if path is not None else sample_data.load_sample(self.cad)
            self.ui.inputStatusLabel.text = f"{self.cad.params.case_id}: " + ", ".join(sorted(created))
            slicer.util.setSliceViewerLayers(background=self.cad.params.t2, fit=True)

    def onInstallFromFile(self):
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Model package",
                                              "", "Model packages (*.zip *.tar.gz *.tgz model.json)")
        if path:
            source = str(Path(path).parent) if Path(path).name == "model.json" else path
            self.startInstall(source)

    def onInstallFromUrl(self):
        url = qt.QInputDialog.getText(slicer.util.mainWindow(), "Install model from URL", "Package URL (.zip/.tar.gz):")
        if not url:
            return
        sha = qt.QInputDialog.getText(slicer.util.mainWindow(), "Install model from URL",
                                      "Expected sha256 of the archive (leave empty to rely on the package's own checksums):")
        self.startInstall(url, sha.strip())

    def onResetRegistration(self):
        self.cad.reset_registration()
        self.ui.registrationStatusLabel.text = "Registration removed: ADC/DWI as acquired."
        self.updateButtons()

    def onLoadDetections(self):
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Detections file", "", "Detections (*.json)")
        if path:
            with slicer.util.tryWithErrorDisplay("Could not show the detections.", waitCursor=True):
                self.showDetections(path)

    def showDetections(self, path):
        self.cad.apply_filter(self.ui.criterionComboBox.currentData, self.ui.thresholdSlider.value)
        _, table, infos = self.cad.load_detections(path)
        self.ui.lesionTableView.setMRMLTableNode(table)
        shown = self.cad.apply_filter()
        self.ui.detectStatusLabel.text = f"{len(infos)} detections, {len(shown)} shown at {self.cad.params.criterion}."

    def onExportToDatabase(self):
        database = self.dicomDatabase()
        with slicer.util.tryWithErrorDisplay("Could not start the export to the DICOM database.", waitCursor=True):
            self.launch(dicom_export.STEP, lambda work: dicom_export.panel_export_command(self.cad, work, database))

    # ------------------------------------------------------------ annotate (seeds -> grown lesions)

    def onSeedsNodeChanged(self, node):
        self._regrowTimer.stop()
        if self._seedsNode is not None:
            self.removeObserver(self._seedsNode, self._seedsNode.PointModifiedEvent, self.onSeedPointModified)
            for event in (self._seedsNode.PointAddedEvent, self._seedsNode.PointRemovedEvent):
                self.removeObserver(self._seedsNode, event, self.onSeedsListChanged)
        self._seedsNode = node
        if node is not None:
            self.addObserver(node, node.PointModifiedEvent, self.onSeedPointModified)
            for event in (node.PointAddedEvent, node.PointRemovedEvent):
                self.addObserver(node, event, self.onSeedsListChanged)
        self.ui.seedPlaceWidget.setCurrentNode(node)
        self.updateSeedTable()

    def onSeedsListChanged(self, caller, event):
        self.updateSeedTable()

    def onSeedPointModified(self, caller, event):
        self._regrowTimer.start()  # restarts on every move event: only where a drag comes to rest is grown

    def onSeedsSettled(self):
        if self._seedsNode is None or self.cad.params.t2 is None:
            return
        if self.annotateLogic.segmentation_of(self._seedsNode) is None:  # nothing grown yet: just show positions
            self.updateSeedTable()
            return
        self.requestGrow(annotate_growing.MOVED, "Could not re-grow the moved seed.")

    def updateSeedTable(self):
        table = self.ui.seedsTableWidget
        rows = self.annotateLogic.table_rows(self._seedsNode) if self._seedsNode is not None else []
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            combo = qt.QComboBox()
            for ggg, cls in ggg_palette.PALETTE.items():
                combo.addItem(cls.name, ggg)
            combo.currentIndex = combo.findData(row.ggg)
            combo.connect("currentIndexChanged(int)", lambda i, pid=row.point_id, c=combo: self.onSeedGGGChanged(pid, c))
            table.setCellWidget(r, 1, combo)
            values = [str(row.number), "", *(f"{v:.1f}" for v in row.position_ras),
                      "" if row.volume_cm3 is None else f"{row.volume_cm3:.2f}", ", ".join(row.flags)]
            for c, text in enumerate(values):
                if c != 1:
                    item = qt.QTableWidgetItem(text)
                    item.setData(qt.Qt.UserRole, row.point_id)
                    table.setItem(r, c, item)
        self.updateAnnotateButtons()

    def updateAnnotateButtons(self):
        seeds = self._seedsNode
        ready = seeds is not None and self.cad.params.t2 is not None and seeds.GetNumberOfControlPoints() > 0
        self.ui.growButton.enabled = ready
        self.ui.regrowSelectedButton.enabled = ready
        self.ui.exportAnnotationButton.enabled = ready and self.annotateLogic.segmentation_of(seeds) is not None

    def onSeedGGGChanged(self, pointId, combo):
        with slicer.util.tryWithErrorDisplay("Could not set the grade group."):
            self.annotateLogic.set_ggg(self._seedsNode, pointId, combo.currentData)

    def onSeedRowClicked(self, row, column):
        item = self.ui.seedsTableWidget.item(row, 0)
        if item is not None and self._seedsNode is not None:
            center = self.annotateLogic.position_ras(self._seedsNode, item.data(qt.Qt.UserRole))
            slicer.modules.markups.logic().JumpSlicesToLocation(*center, True)

    def growSeeds(self, pointIds=None):
        self._regrowTimer.stop()
        self.requestGrow(pointIds, "Could not grow the lesions.")

    def requestGrow(self, pointIds, failure):
        """Grow in the background (annotate_growing); a request while a grow runs waits for it."""
        with slicer.util.tryWithErrorDisplay(failure):
            finished = self.growQueue.request(self._seedsNode, self.cad.params.t2, pointIds,
                                              force=self.ui.overwriteEditsCheckBox.checked)
            if finished is not None:
                self.showGrown(finished)
            elif self.growQueue.waiting:
                self.ui.annotateStatusLabel.text = "Growing… (your latest request follows)"
            else:
                self.ui.annotateStatusLabel.text = "Growing…"
                self._growTimer.start()
        self.updateButtons()  # Cancel stops a grow too

    def onGrowPoll(self):
        update = self.growQueue.poll()
        if update is None:
            self._growTimer.stop()
            return
        if update.finished:
            self.showGrown(update)
        if not self.growQueue.running:
            self._growTimer.stop()
            self.updateButtons()

    def showGrown(self, update):
        """A finished grow: its outcome in the status line, the table refreshed; a failure in one sentence."""
        self.ui.annotateStatusLabel.text = update.outcome.message() if update.outcome else update.message
        if self.growQueue.running:
            self.ui.annotateStatusLabel.text += " Growing the next request…"
        self.updateSeedTable()
        if update.error:
            slicer.util.errorDisplay(f"Could not grow the lesions: {update.error}", detailedText="\n".join(update.log))

    def onGrow(self):
        self.growSeeds(None)

    def onRegrowSelected(self):
        table = self.ui.seedsTableWidget
        rows = sorted({index.row() for index in table.selectedIndexes()})
        pointIds = [table.item(r, 0).data(qt.Qt.UserRole) for r in rows if table.item(r, 0) is not None]
        if pointIds:
            self.growSeeds(pointIds)

    def onExportAnnotation(self):
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Export ground truth to folder")
        if folder:
            with slicer.util.tryWithErrorDisplay("Could not export the annotation.", waitCursor=True):
                path = self.annotateLogic.export(self._seedsNode, self.cad.params.t2, folder)
                self.ui.annotateStatusLabel.text = f"Wrote {path} and lesions.nrrd."

    # ------------------------------------------------------------ background steps

    def statusLabel(self, step):
        return {"registration": self.ui.registrationStatusLabel, "zones": self.ui.zonesStatusLabel,
                "install": self.ui.modelCardLabel, "dicom": self.ui.inputStatusLabel,
                "dicom-export": self.ui.inputStatusLabel}.get(step, self.ui.detectStatusLabel)

    def startStep(self, step):
        with slicer.util.tryWithErrorDisplay(f"Could not start the {step} step.", waitCursor=True):
            self.launch(step, lambda work: self.cad.step_command(step, work))

    def startInstall(self, source, sha256=""):
        with slicer.util.tryWithErrorDisplay("Could not start the model installation.", waitCursor=True):
            self.launch("install", lambda work: self.cad.install_command(source, sha256))

    def launch(self, step, prepare):
        process = self.logic.runner.start(step, prepare)
        logging.info("ProstateLesionCAD: running %s", " ".join(process.argv))
        self.ui.progressBar.value = 0
        self.statusLabel(step).text = "Running…"
        self._timer.start()
        self.updateButtons()

    def onCancel(self):
        if self._dicomImport is not None:
            self.onCancelDicomImport()
        if self.growQueue is not None:
            self.growQueue.cancel()
        self.logic.runner.cancel()

    def onPoll(self):
        update = self.logic.runner.poll()
        if update is None:
            self._timer.stop()
            return
        label = self.statusLabel(update.step)
        if update.percent is not None:
            self.ui.progressBar.value = int(update.percent)
            label.text = update.message
        if not update.finished:
            return
        self._timer.stop()
        try:
            if update.state == background_process.SUCCEEDED:
                with slicer.util.tryWithErrorDisplay(f"The {update.step} step finished but its result could not be "
                                                     "loaded.", waitCursor=True):
                    self.loadResult(update.step, update.out_dir, update.log)
                notes = update.notes()  # e.g. a channel left blank, a demo model: they stay visible
                if notes:
                    label.text = label.text + "<br>" + "<br>".join(notes)
            else:
                label.text = update.status_text()
                if update.state == background_process.FAILED:
                    slicer.util.errorDisplay(f"The {update.step} step failed: {update.error}",
                                             detailedText="\n".join(update.log))
        finally:
            update.cleanup()
            self.updateButtons()

    def onExportImported(self, job):
        names = dicom_export.finish_import(job)
        if not job.cancelled:
            self.ui.detectStatusLabel.text = (f"Imported {' and '.join(names)} into the DICOM database "
                                              "(a new series in the T2's study).")

    def loadResult(self, step, out, log=()):
        if step == "dicom":
            self.onDicomClassified(dicom_database.read_plan(log))
        elif step == "dicom-export":
            self.startStudyLoad(self._dicomPlan, read_case_json(out / "case.json"))
        elif step == "registration":
            self.cad.load_registration_result(out)
            p = self.cad.params
            moving = p.adc or p.dwi_high or p.dwi_low
            # fusion view: the registered ADC/DWI over T2, to judge and correct the alignment
            slicer.util.setSliceViewerLayers(background=p.t2, foreground=moving, foregroundOpacity=0.5)
            self.ui.registrationStatusLabel.text = ("Registered: ADC/DWI are under the transform node; correct it in "
                                                    "Transforms (translate/rotate) or Reset.")
        elif step == "zones":
            self.cad.load_zones_result(out)
            self.ui.zonesStatusLabel.text = "Zones ready: correct them in Segment Editor if needed."
        elif step == "detection":
            self.showDetections(self.cad.keep_detection_run(out))
        elif step == dicom_export.STEP:
            database = self.dicomDatabase()
            self.startDatabaseImport(lambda indexer: dicom_export.start_import(out, database, indexer),
                                     self.onExportImported, self.ui.detectStatusLabel,
                                     "Importing the DICOM SEG and SR into the DICOM database…")
        elif step == "install":
            self.refreshModels()
            self.ui.modelCardLabel.text = "Installed. " + self.ui.modelCardLabel.text


class ProstateLesionCADLogic(ScriptedLoadableModuleLogic):
    """The module's logic: the MRML glue (`cad`, a CadLogic) on the application's scene (or a
    given one) and the runner of its background steps. ZonalSegmentationLogic has the same shape."""

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.cad = CadLogic(scene if scene is not None else slicer.mrmlScene)
        self.runner = background_process.ProcessRunner()

    def getParameterNode(self):
        return get_parameter_node(self.cad.scene)


class ProstateLesionCADTest(ScriptedLoadableModuleTest):
    """The walk-through a user makes on the bundled ProstateX-0000, inside Slicer: load the sample
    as Sample Data does -> zones -> registration (fast, 2 starts) -> detection -> lesion segments in
    their GGG colours, ROIs and table -> the panel's preset buttons move the threshold slider ->
    annotate: seed, grow, move the seed, re-grow, export. Each background step runs with a time
    limit; a step this installation lacks, a missing detection model or a failing step fails it."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_walkthrough_on_sample()

    def test_walkthrough_on_sample(self):
        logic = ProstateLesionCADLogic()
        cad = logic.cad
        require_steps(cad.step_availability(), PANEL_STEPS)
        models = require_models(cad.detector_models(), "detection")
        slicer.util.selectModule("ProstateLesionCAD")
        widget = slicer.util.getModuleWidget("ProstateLesionCAD")

        self.delayDisplay("Loading ProstateX-0000 as the Sample Data module does")
        created = ProstateLesionCAD.loadSample()
        self.assertEqual(sorted(created), sorted(v.role for v in sample_data.sample_source().volumes))
        self.assertEqual(cad.params.case_id, sample_data.SAMPLE_NAME)

        self.delayDisplay("Zonal segmentation")
        zones = self_test_steps.run_step(logic.runner, "zones", lambda work: cad.step_command("zones", work),
                                         cad.load_zones_result, STEP_TIMEOUT_S)
        self_test_steps.check_zones(zones)

        self.delayDisplay(f"Registration (fast preset, {self_test_steps.SELF_TEST_STARTS} starts)")
        self_test_steps.run_step(logic.runner, "registration",
                                 lambda work: self_test_steps.registration_command(cad, work),
                                 cad.load_registration_result, STEP_TIMEOUT_S)
        self_test_steps.check_registration(cad)

        self.delayDisplay(f"Detection with {models[0].name}, on the registration and the zones")
        cad.params.model = models[0].name
        seg, table, infos = self_test_steps.run_step(
            logic.runner, "detection", lambda work: cad.step_command("detection", work),
            lambda out: cad.load_detections(out / "detections.json"), STEP_TIMEOUT_S)
        self_test_steps.check_lesion_nodes(cad, seg, table, infos)

        self.delayDisplay("Working points: the preset buttons move the threshold slider")
        presets = self_test_steps.model_presets(cad, models[0])
        for key, button in (("max_sensitivity", widget.ui.maxSensitivityButton), ("balanced", widget.ui.balancedButton)):
            button.click()
            value = widget.ui.thresholdSlider.value
            self.assertAlmostEqual(value, presets[key], delta=0.005)  # the slider shows two decimals
            self_test_steps.check_filter(cad, infos, value)

        self.delayDisplay("Annotate: seed, grow, move the seed, re-grow, export")
        path = self_test_steps.annotate_sample(slicer.mrmlScene, cad.params.t2)
        self.delayDisplay(f"Walk-through passed; the annotation is in {path.parent}")
