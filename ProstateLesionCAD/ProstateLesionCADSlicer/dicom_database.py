"""A study from Slicer's DICOM database -> the panel's role volumes, loaded by Slicer's DICOM plugins.

Three parts, so that only the first needs a running Slicer:

- **Database access** (`study_files`, `study_of_volume`, `volume_study_files`, `study_of_series`,
  `database_studies`): thin calls on
  a ctkDICOMDatabase (`slicer.app.dicomDatabase()` in Slicer), the methods Slicer 5.12's
  DICOMLib/DICOMUtils.py itself calls (patients, studiesForPatient, nameForPatient,
  seriesForStudy, filesForSeries, fileForInstance, fileValue).
- **Classification in the background**: the study's file list is written to the step's
  folder and `prostate-cad load --files-from <list> --json` runs in the panel's
  ProcessRunner; it prints the loader's choice (ProstateLesionCADLib.study.series_plan):
  per role the SeriesInstanceUID, its files in slice order, the b-value, the DCE time points.
- **Nodes** (`StudyLoad`, one step per series, so that the panel stays responsive): each
  role's files are handed to a series loader — in Slicer the DICOM scalar volume plugin
  (`dicom_plugin_loader`), which gives the volume its DICOM.instanceUIDs and its subject
  hierarchy entry — and the panel's attributes are added:
  role, b-value, SeriesInstanceUID. An ADC stored in another unit than 10⁻⁶ mm²/s (10⁻³ mm²/s,
  mm²/s: some Philips and PACS exports) is converted in place by the project loader's rule
  (mrml_volumes.adc_node_to_micro) and says so (ADC_UNIT_ATTRIBUTE, the status line). DCE time points become one vtkMRMLSequenceNode
  (index: time in seconds) with a sequence browser; Slicer's Sequences module creates the
  proxy volume the views show.

A role whose images are not one file per slice (frames of a multi-frame object, diffusion
directions combined per slice) cannot be handed to the plugin as a file list: the panel
then also runs `prostate-cad load --export` in the background and such a role's volume
is made from the exported image (role, SeriesInstanceUID and b-value attributes, no
DICOM.instanceUIDs); without that export it is left out and named (`LoadedStudy.skipped`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from ProstateLesionCADLib.errors import CaseError, FormatError
from ProstateLesionCADLib.preprocessing.channels import choose_dwi_high, choose_dwi_low
from ProstateLesionCADLib.study.series_plan import FORMAT as PLAN_FORMAT

from .background_process import cli_command
from .cad_logic import B_VALUE_ATTRIBUTE, ROLE_ATTRIBUTE
from .mrml_volumes import adc_node_to_micro, image_to_volume_node

if TYPE_CHECKING:
    from ProstateLesionCADLib.study.case import Case

INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"  # set by Slicer's DICOM plugins: SOPInstanceUIDs, one per slice
ADC_UNIT_ATTRIBUTE = "ProstateLesionCAD.ADCUnit"  # what was done to an ADC read in another unit
SERIES_UID_ATTRIBUTE = "ProstateLesionCAD.SeriesInstanceUID"
STUDY_UID_TAG = "0020,000D"
SERIES_UID_TAG = "0020,000E"
FILE_LIST = "study-files.txt"
TIME_UNIT = "s"

# files in slice order, node name -> a new scalar volume node carrying DICOM.instanceUIDs
SeriesLoader = Callable[[list[str], str], object]


# ------------------------------------------------------------ database access (needs ctkDICOMDatabase)

@dataclass(frozen=True)
class StudyEntry:
    uid: str
    label: str


def study_files(database, study_uid: str) -> list[str]:
    """Every file the database holds for a study (all its series)."""
    files = [path for series in database.seriesForStudy(study_uid) for path in database.filesForSeries(series)]
    if not files:
        raise CaseError(f"The DICOM database holds no files for the study {study_uid}.")
    return files


def study_of_volume(database, node) -> str:
    """The StudyInstanceUID of a volume loaded from the DICOM database (its DICOM.instanceUIDs)."""
    uids = (node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()
    if not uids:
        raise CaseError(f"'{node.GetName()}' was not loaded from DICOM (it has no DICOM instance UIDs): "
                        "choose a study of the DICOM database instead.")
    for uid in uids:
        path = database.fileForInstance(uid)
        study = database.fileValue(path, STUDY_UID_TAG) if path else ""
        if study:
            return study
    raise CaseError(f"The DICOM database does not hold the images of '{node.GetName()}' (import them first).")


def volume_study_files(database, node) -> tuple[list[str], str]:
    """The files of the study a volume loaded from the DICOM database belongs to, and its own SeriesInstanceUID."""
    study = study_of_volume(database, node)
    series = node.GetAttribute(SERIES_UID_ATTRIBUTE) or ""
    if not series:
        first = database.fileForInstance(node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE).split()[0])
        series = database.fileValue(first, SERIES_UID_TAG) if first else ""
    if not series:
        raise CaseError(f"The DICOM database does not say which series '{node.GetName()}' belongs to.")
    return study_files(database, study), series


def study_of_series(database, series_uids: Sequence[str]) -> Optional[str]:
    """The StudyInstanceUID of the first of these series the database holds files of; None if none."""
    for uid in series_uids:
        files = database.filesForSeries(uid, 1)
        study = database.fileValue(files[0], STUDY_UID_TAG) if files else ""
        if study:
            return study
    return None


def database_studies(database) -> list[StudyEntry]:
    """The database's studies, labelled 'patient · date · description (n series)', for a chooser."""
    entries = []
    for patient in database.patients():
        name = database.nameForPatient(patient)
        for study in database.studiesForPatient(patient):
            series = database.seriesForStudy(study)
            first = next((f for s in series for f in database.filesForSeries(s, 1)), "")
            date = database.fileValue(first, "0008,0020") if first else ""
            description = database.fileValue(first, "0008,1030") if first else ""
            parts = [p for p in (name, date, description) if p]
            entries.append(StudyEntry(study, f"{' · '.join(parts) or study} ({len(series)} series)"))
    return entries


class DatabaseImport:
    """A folder imported into Slicer's DICOM database without blocking the GUI.

    DICOMUtils.importDicom (Slicer 5.12) calls ctkDICOMIndexer.addDirectory and then
    waitForImportFinished, which spins a local event loop until the indexer's worker thread is
    done: the panel's handler would not return for the whole import. Here the indexer runs with
    `backgroundImportEnabled` (the Q_PROPERTY Slicer's DICOMListener and CTK's DICOM browsers set),
    so addDirectory returns at once (for a folder holding a DICOMDIR, after reading that index
    file), and the panel's timer polls the indexer's `importing` property. The indexer object
    (`ctk.ctkDICOMIndexer()` in Slicer) is passed in, so that this class imports no Qt.
    """

    def __init__(self, indexer, database, folder, copy_files: bool = False):
        self.indexer, self.folder = indexer, str(folder)
        self.cancelled = False
        indexer.backgroundImportEnabled = True
        indexer.addDirectory(database, self.folder, copy_files)

    @property
    def finished(self) -> bool:
        return not self.indexer.importing

    def cancel(self) -> None:
        """Stop indexing what is still queued (files indexed so far stay in the database); `finished`
        once the indexer's thread has stopped."""
        self.cancelled = True
        self.indexer.cancel()


# ------------------------------------------------------------ classification (a background command)

def write_file_list(files: Sequence[str], work_dir) -> Path:
    path = Path(work_dir) / FILE_LIST
    path.write_text("".join(f"{f}\n" for f in files), encoding="utf-8")
    return path


def _source_arguments(source, work_dir) -> list[str]:
    """A study folder (str/Path) as itself; a list of files through a file list in the step's folder."""
    if isinstance(source, (str, Path)):
        return [str(source)]
    return ["--files-from", str(write_file_list(source, work_dir))]


def classify_command(source, work_dir, python: Optional[str] = None) -> list[str]:
    """The argv printing the study plan of a folder or a list of files (`load ... --json`)."""
    return cli_command("load", [*_source_arguments(source, work_dir), "--json"], python)


def export_command(source, work_dir, python: Optional[str] = None) -> list[str]:
    """The argv reading the study with the project's loader into `<work_dir>/out` (NRRD + case.json), for
    the roles Slicer's plugin cannot load from a file list."""
    return cli_command("load", [*_source_arguments(source, work_dir), "--export", str(Path(work_dir) / "out")], python)


def needs_export(plan: dict) -> bool:
    """Whether some series' images are not one file per slice (multi-frame objects, combined directions)."""
    return any(not point["per_slice_files"] for entry in plan["roles"] for point in (entry.get("time_points") or [entry]))


def read_plan(lines: Sequence[str]) -> dict:
    """The study plan among a finished `load --json` process's output lines."""
    for line in reversed(list(lines)):
        text = line.strip()
        if not text.startswith("{"):
            continue
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("format") == PLAN_FORMAT:
            return data
    raise FormatError(f"The classification printed no study description ({PLAN_FORMAT}).")


# ------------------------------------------------------------ nodes

@dataclass
class LoadedStudy:
    case_id: str
    study_uid: str
    created: dict = field(default_factory=dict)  # panel role -> node (DCE: the sequence node)
    skipped: list[str] = field(default_factory=list)  # roles whose images are not one file per slice

    def summary(self) -> str:
        text = f"{self.case_id}: " + ", ".join(sorted(self.created))
        if self.skipped:
            text += f"; not loaded ({', '.join(self.skipped)}: not one file per slice)"
        adc = self.created.get("ADC")
        if adc is not None and adc.GetAttribute(ADC_UNIT_ATTRIBUTE):
            text += f"; {adc.GetAttribute(ADC_UNIT_ATTRIBUTE)}"
        return text


def dicom_plugin_loader() -> SeriesLoader:
    """Slicer's DICOM scalar volume plugin as a series loader (needs a running Slicer).

    Its `load` reads the files as given (slice order), sets DICOM.instanceUIDs and
    DICOM.instanceNumbers, window/level and the subject hierarchy entry from the database.
    """
    import slicer
    from DICOMLib import DICOMLoadable

    plugin = slicer.modules.dicomPlugins["DICOMScalarVolumePlugin"]()

    def load(files: list[str], name: str):
        loadable = DICOMLoadable()
        loadable.files, loadable.name, loadable.tooltip = list(files), name, name
        loadable.selected, loadable.grayscale = True, True
        node = plugin.load(loadable)
        if node is None:
            raise CaseError(f"Slicer's DICOM scalar volume plugin could not read {name} ({files[0]} ...).")
        return node

    return load


def _exported_image(case: "Case", slot: str, index: int = 0):
    """The image of a plan's slot (and DCE time point) in the project loader's Case."""
    role, _, b = slot.partition(":")
    images = {"T2": case.t2, "ADC": case.adc, "KTRANS": case.ktrans}
    if role in images:
        return images[role]
    if role == "DCE":
        return case.dce[index] if index < len(case.dce) else None
    return (case.dwi if role == "DWI" else case.dwi_computed).get(float(b))


def _load_entry(entry: dict, name: str, role: str, load_series: SeriesLoader, b: Optional[float] = None,
                scene=None, image=None):
    """A volume node through the series loader, or from the exported `image` when given."""
    node = load_series(list(entry["files"]), name) if image is None else image_to_volume_node(scene, image, name)
    if role == "ADC" and image is None:  # the exported image is in 10^-6 mm²/s already (the project's loader)
        note = adc_node_to_micro(node)
        if note:
            node.SetAttribute(ADC_UNIT_ATTRIBUTE, note)
    node.SetAttribute(ROLE_ATTRIBUTE, role)
    node.SetAttribute(SERIES_UID_ATTRIBUTE, entry["series_uid"])
    if b is not None:
        node.SetAttribute(B_VALUE_ATTRIBUTE, f"{b:g}")
    return node


def _remove(scene, node) -> None:
    """A node with its display and storage nodes."""
    helpers = []
    if node.IsA("vtkMRMLDisplayableNode"):
        helpers += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        helpers.append(node.GetStorageNode())
    scene.RemoveNode(node)
    for helper in helpers:
        if helper is not None:
            scene.RemoveNode(helper)


class StudyLoad:
    """The GUI-thread part of loading a classified study: one step per series (or DCE time point).

    The panel runs one step per timer tick, so Slicer stays responsive between series;
    `run()` runs them all (scripts, tests). The selectors are filled by the last step, once
    every role is loaded. DWI: the b-values the detector's DWI_LOW/DWI_HIGH channels take
    (the rule of `CadLogic.load_study`), each with its b-value attribute. DCE: one sequence
    node (index: seconds from the first time point, else the time point number) and a
    sequence browser; each time point is loaded as a volume (keeping its DICOM attributes),
    copied into the sequence and removed from the scene.
    """

    def __init__(self, cad, plan: dict, load_series: SeriesLoader, exported: Optional["Case"] = None):
        if plan.get("format") != PLAN_FORMAT:
            raise FormatError(f"Expected a study description of format {PLAN_FORMAT}, got {plan.get('format')!r}.")
        self.cad, self.load_series, self.exported = cad, load_series, exported
        self.result = LoadedStudy(plan.get("case_id") or "study", plan.get("study_uid", ""))
        self._nodes: dict[str, object] = {}  # panel role -> node, for the last step
        self._sequence = self._browser = None
        self.steps: list[tuple[str, Callable[[], None]]] = []
        by_slot = {entry["slot"]: entry for entry in plan["roles"]}
        case_id = self.result.case_id
        t2 = by_slot.get("T2")
        if t2 is None:
            raise CaseError(f"{case_id}: the study description has no T2 series.")
        if not self._loadable(t2, "T2"):
            raise CaseError(f"{case_id}: the T2 images are not one file per slice and were not exported.")
        self._add("T2", t2, f"{case_id} T2")
        for role, label in (("ADC", "ADC"), ("KTRANS", "Ktrans")):
            entry = by_slot.get(role)
            if entry is not None and self._loadable(entry, label):
                self._add(role, entry, f"{case_id} {label}")
        measured = {e["b_value"]: e for e in plan["roles"] if e["role"] == "DWI"}
        computed = {e["b_value"]: e for e in plan["roles"] if e["role"] == "DWI_COMPUTED"}
        for role, choice in (("DWI_LOW", choose_dwi_low(measured, computed)),
                             ("DWI_HIGH", choose_dwi_high(measured, computed))):
            if choice is not None:
                entry = (computed if choice.computed else measured)[choice.b_value]
                if self._loadable(entry, f"DWI b={choice.b_value:g}"):
                    self._add(role, entry, f"{case_id} DWI {choice.describe()}", choice.b_value)
        dce = by_slot.get("DCE")
        if dce is not None and self._loadable(dce, "DCE"):
            points = dce["time_points"]
            timed = all(point.get("time_s") is not None for point in points)
            self.steps.append(("DCE sequence", self._start_sequence))
            for point in points:
                value = point["time_s"] if timed else point["index"]
                image = self._image(point, "DCE", point["index"])
                self.steps.append((f"DCE time point {point['index'] + 1}/{len(points)}",
                                   lambda point=point, value=value, image=image: self._add_time_point(point, value, image)))
            self.steps.append(("DCE browser", self._add_browser))
        self.steps.append(("selectors", self._fill_selectors))

    def _loadable(self, entry: dict, label: str) -> bool:
        points = entry.get("time_points") or [entry]
        if all(point["per_slice_files"] or self._image(point, entry["slot"], point.get("index", 0)) is not None
               for point in points):
            return True
        self.result.skipped.append(label)
        return False

    def _image(self, entry: dict, slot: str, index: int = 0):
        """The exported image replacing a series the plugin cannot read from its files; else None."""
        if entry["per_slice_files"] or self.exported is None:
            return None
        return _exported_image(self.exported, slot, index)

    def _add(self, role: str, entry: dict, name: str, b: Optional[float] = None) -> None:
        image = self._image(entry, entry["slot"])

        def step():
            self._nodes[role] = _load_entry(entry, name, role, self.load_series, b, self.cad.scene, image)
        self.steps.append((name, step))

    def _start_sequence(self) -> None:
        sequence = self.cad.scene.AddNewNodeByClass("vtkMRMLSequenceNode", f"{self.result.case_id} DCE")
        sequence.SetIndexName("time")
        sequence.SetIndexUnit(TIME_UNIT)
        sequence.SetIndexType(sequence.NumericIndex)
        sequence.SetAttribute(ROLE_ATTRIBUTE, "DCE")
        self._sequence = sequence

    def _add_time_point(self, point: dict, value: float, image=None) -> None:
        scene = self.cad.scene
        node = _load_entry(point, f"{self.result.case_id} DCE {point['index'] + 1:03d}", "DCE", self.load_series,
                           scene=scene, image=image)
        self._sequence.SetDataNodeAtValue(node, f"{value:g}")
        _remove(scene, node)

    def _add_browser(self) -> None:
        """The browser of the DCE sequence; Slicer's Sequences module gives it the proxy volume the views show."""
        browser = self.cad.scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{self.result.case_id} DCE browser")
        browser.SetAndObserveMasterSequenceNodeID(self._sequence.GetID())
        self._browser = browser
        self._nodes["DCE"] = self._sequence

    def _fill_selectors(self) -> None:
        p = self.cad.params
        p.t2 = self._nodes["T2"]
        for role in ("ADC", "DWI_LOW", "DWI_HIGH", "KTRANS"):
            p.set_input(role, self._nodes.get(role))
        p.dce = [self._nodes["DCE"]] if "DCE" in self._nodes else []
        p.case_id = self.result.case_id
        p.dicom_folder = f"DICOM database study {self.result.study_uid}"
        self.result.created = dict(self._nodes)

    def run(self) -> LoadedStudy:
        for _, step in self.steps:
            step()
        return self.result

    def abort(self) -> None:
        """Remove what the steps run so far created (a step failed or the scene is closing)."""
        for node in [*self._nodes.values(), self._sequence, self._browser]:
            if node is not None and node.GetScene() is not None:
                _remove(self.cad.scene, node)
        self._nodes.clear()
        self._sequence = self._browser = None
