"""The CAD panel's logic: MRML glue between the scene and ProstateLesionCADLib.

`CadLogic(scene)` never reaches for a global scene, never imports qt, and runs with the
slicer-core wheel (Testing/test_cad_logic.py). Heavy work is not done here: steps run
as `prostate-cad` child processes (background_process.py) on files this logic writes
from the nodes (`export_case`, the registration as a transform file), with command lines
built by step_arguments.py; their outputs come back as nodes (`load_*_result`). The steps
offered are those of the library's capabilities table (ProstateLesionCADLib.capabilities).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import SimpleITK as sitk

from ProstateLesionCADLib import formats, ggg_palette
from ProstateLesionCADLib.capabilities import panel_steps
from ProstateLesionCADLib.lesions import masks as lesion_masks
from ProstateLesionCADLib.study.adc_units import adc_to_micro
from ProstateLesionCADLib.errors import CaseError, FormatError, ModelError

from . import lesion_nodes, mrml_volumes
from .parameters import CadParameters, parameters
from .step_arguments import (DetectionArguments, InstallArguments, RegistrationArguments, StepArguments,
                             ZonesArguments, step_availability)
from .zonal_logic import ZonalLogic

if TYPE_CHECKING:
    from ProstateLesionCADLib.study.case import Case

B_VALUE_ATTRIBUTE = "ProstateLesionCAD.BValue"
TIME_ATTRIBUTE = "ProstateLesionCAD.TimeSeconds"
ROLE_ATTRIBUTE = "ProstateLesionCAD.Role"
DEFAULT_B = {"DWI_LOW": 400.0, "DWI_HIGH": 800.0}  # when a DWI volume carries no b-value

DETECTION_TASKS = ("detector", "focalnet")  # model tasks `prostate-cad detect` dispatches on
ALL_CANDIDATES_TASK = "focalnet"  # `detect --all` changes what this task's packages write, no other's
ALL_CANDIDATES_TIP = (
    "FocalNet marks lesion candidates at the local maxima of its lesion probability and by default writes only "
    "those at or above the package's working point (its GGG≥1 max-sensitivity threshold, set on held-out cases). "
    "Ticked, it writes every local maximum above the localisation threshold (0.05), as the paper's FROC sweeps "
    "them (prostate-cad evaluate --froc-protocol focalnet needs all): many more candidates, mostly false "
    "positives; the score slider still filters what is shown (prostate-cad detect --all).")
PANEL_STEPS = ("registration", "zones", "detection")  # the steps with a button in the panel
DICOM_EXPORT_STEP = "dicom-seg"  # "Export to DICOM database" (dicom_export.py)
# what the panel offers, and installs the packages of on first use: the steps and the DICOM export
OFFERED_STEPS = (*PANEL_STEPS, DICOM_EXPORT_STEP)
TRANSFORM_FILE = "registration.h5"  # the ADC/DWI placement handed to detection


class CadLogic:
    """MRML glue of the ProstateLesionCAD panel; takes the scene explicitly."""

    def __init__(self, scene):
        self.scene = scene
        self.capabilities = panel_steps()  # step name -> capabilities.Step
        self.kept_run: Optional[Path] = None  # the last detection step's outputs, kept for an export

    @property
    def params(self) -> CadParameters:
        return parameters(self.scene)

    def step_availability(self) -> dict[str, tuple[bool, str]]:
        """Step -> (offered?, tooltip), for the steps and the DICOM export. A step the library's capabilities
        lack is not offered, nor one whose Python packages are not installed yet."""
        return step_availability(self.capabilities, OFFERED_STEPS)

    @staticmethod
    def detector_models() -> list:
        """Installed packages `prostate-cad detect` runs: Retina U-Net ("detector") and FocalNet."""
        from ProstateLesionCADLib.models.package import installed_packages

        return [p for p in installed_packages() if p.task in DETECTION_TASKS]

    @staticmethod
    def model_presets(package, min_ggg: int) -> Optional[dict[str, float]]:
        """{'max_sensitivity': t, 'balanced': t} for criterion GGG>=k, or None when the model has none."""
        if package is None:
            return None
        entry = package.thresholds(ggg_palette.criterion_name(min_ggg))
        if not entry or "max_sensitivity" not in entry or "balanced" not in entry:
            return None
        return {"max_sensitivity": float(entry["max_sensitivity"]), "balanced": float(entry["balanced"])}

    @staticmethod
    def all_candidates_state(package) -> tuple[bool, str]:
        """(enabled?, tooltip) of "Write every candidate": a FocalNet package only."""
        if package is None:
            return False, "Select a FocalNet detection model: only FocalNet filters its candidates at a working point."
        if package.task != ALL_CANDIDATES_TASK:
            return False, (f"Not for '{package.name}': a Retina U-Net model writes every detection it finds (the "
                           "score slider chooses what is shown); only FocalNet models filter their candidates at "
                           "a working point.")
        return True, ALL_CANDIDATES_TIP

    def writes_all_candidates(self) -> bool:
        """Whether detection runs with `--all`: the box is ticked and the selected model is a FocalNet package."""
        from ProstateLesionCADLib.models.package import find_model

        p = self.params
        return bool(p.all_candidates and p.model) and find_model(p.model, verify=False).task == ALL_CANDIDATES_TASK

    # ------------------------------------------------------------ inputs

    def load_study(self, path, progress=None) -> dict:
        """Load a DICOM folder / case file with the library's loader; fill the role selectors."""
        from ProstateLesionCADLib.study.loading import load_case
        from ProstateLesionCADLib.preprocessing.channels import choose_dwi_high, choose_dwi_low

        case = load_case(path, progress=progress) if progress else load_case(path)
        p = self.params
        created = {}

        def add(role: str, image, label: str, b: Optional[float] = None):
            node = mrml_volumes.image_to_volume_node(self.scene, image, f"{case.case_id} {label}")
            node.SetAttribute(ROLE_ATTRIBUTE, role)
            if b is not None:
                node.SetAttribute(B_VALUE_ATTRIBUTE, f"{b:g}")
            created[role] = node
            return node

        p.t2 = add("T2", case.t2, "T2")
        p.adc = add("ADC", case.adc, "ADC") if case.adc is not None else None
        all_dwi = case.all_dwi()
        for role, choice in (("DWI_LOW", choose_dwi_low(case.dwi, case.dwi_computed)),
                             ("DWI_HIGH", choose_dwi_high(case.dwi, case.dwi_computed))):
            node = add(role, all_dwi[choice.b_value], f"DWI {choice.describe()}", choice.b_value) if choice else None
            p.set_input(role, node)
        p.ktrans = add("KTRANS", case.ktrans, "Ktrans") if case.ktrans is not None else None
        dce_nodes = []
        for i, image in enumerate(case.dce):
            node = mrml_volumes.image_to_volume_node(self.scene, image, f"{case.case_id} DCE {i + 1:03d}")
            node.SetAttribute(ROLE_ATTRIBUTE, "DCE")
            if i < len(case.dce_times):
                node.SetAttribute(TIME_ATTRIBUTE, f"{case.dce_times[i]:g}")
            dce_nodes.append(node)
        p.dce = dce_nodes
        if dce_nodes:
            created["DCE"] = dce_nodes
        p.case_id = case.case_id
        p.dicom_folder = str(path)
        return created

    @staticmethod
    def b_value_of(node, role: str) -> float:
        """A DWI volume's b-value: the loader's attribute, else 'b800' in its name, else a default."""
        value = node.GetAttribute(B_VALUE_ATTRIBUTE)
        if value:
            return float(value)
        match = re.search(r"\bb[-_ ]?(\d{2,4})\b", node.GetName(), re.IGNORECASE)
        return float(match.group(1)) if match else DEFAULT_B[role]

    def case_from_nodes(self) -> "Case":
        """The selected inputs as the library's Case (zones if any), every image as acquired.

        ADC/DWI keep their own voxels and grid whatever transform node they sit under: a new
        registration starts from them, and detection receives the transform separately
        (`write_registration`) so that they are interpolated once, by the library.
        """
        from ProstateLesionCADLib.study.case import Case, SeriesInfo

        p = self.params
        if p.t2 is None:
            raise CaseError("Select a T2 volume (the T2 input is required).")
        case = Case(case_id=p.case_id or p.t2.GetName(), t2=mrml_volumes.volume_node_to_image(p.t2))
        used = [("T2", p.t2)]
        if p.adc is not None:
            # in 10^-6 mm²/s, as the project's loader gives it, also when the ADC was loaded by Slicer's own
            # DICOM module in the scanner's unit (the panel's database load converts the node itself)
            case.adc, unit_note = adc_to_micro(mrml_volumes.volume_node_to_image(p.adc))
            case.notes += [f"ADC '{p.adc.GetName()}': {unit_note}"] if unit_note else []
            used.append(("ADC", p.adc))
        for role in ("DWI_LOW", "DWI_HIGH"):
            node = p.input(role)
            if node is not None:
                b = self.b_value_of(node, role)
                case.dwi[b] = mrml_volumes.volume_node_to_image(node)
                used.append((f"DWI:{b:g}", node))
        if p.ktrans is not None:
            case.ktrans = mrml_volumes.volume_node_to_image(p.ktrans)
            used.append(("KTRANS", p.ktrans))
        dce, times = self._dce_volumes()
        case.dce = [mrml_volumes.volume_node_to_image(n) for n in dce]
        case.dce_times = times
        used += [("DCE", n) for n in dce[:1]]
        case.zones = self.zones_image()
        case.used = [SeriesInfo(role=role, description=node.GetName(), source=node.GetID(), reason="selected in Slicer")
                     for role, node in used]
        return case

    def export_case(self, out_dir) -> Path:
        """Write the selected inputs as NRRD + case.json (the library's case format) for the CLI."""
        from ProstateLesionCADLib.study.case_json import write_case_files

        return write_case_files(self.case_from_nodes(), Path(out_dir))

    def moving_nodes(self) -> list:
        """The selected ADC and DWI volumes: the images registration places onto T2."""
        p = self.params
        return [n for n in (p.adc, p.dwi_low, p.dwi_high) if n is not None]

    def write_registration(self, path) -> Optional[Path]:
        """The transform ADC/DWI sit under, as the ITK file `detect --transform` reads; None when they sit under none.

        Detection applies one transform to ADC and DWI alike, so they must share it.
        """
        moving = self.moving_nodes()
        parents = {n.GetParentTransformNode().GetID() if n.GetParentTransformNode() else None for n in moving}
        if len(parents) > 1:
            names = ", ".join(f"'{n.GetName()}'" for n in moving)
            raise CaseError(f"ADC and DWI ({names}) sit under different transforms; detection applies one "
                            "registration to all of them: put them under the same transform node.")
        if not moving or parents == {None}:
            return None
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return mrml_volumes.write_world_transform(self.scene, moving[0], Path(path))

    def _dce_volumes(self) -> tuple[list, list[float]]:
        """DCE time points (volume nodes in order) and their times in seconds ([] when unknown).

        Times come from the loader's attribute on each volume, or from a sequence's index
        values when they are numbers (seconds), relative to the first time point.
        """
        nodes, times = [], []
        for node in self.params.dce:
            if node is None:
                continue
            if node.IsA("vtkMRMLSequenceNode"):
                for i in range(node.GetNumberOfDataNodes()):
                    nodes.append(node.GetNthDataNode(i))
                    times.append(node.GetNthIndexValue(i) if node.GetIndexUnit() in ("s", "sec", "") else None)
            else:
                nodes.append(node)
                times.append(node.GetAttribute(TIME_ATTRIBUTE))
        try:
            seconds = [float(t) for t in times]
        except (TypeError, ValueError):
            return nodes, []
        return nodes, [t - seconds[0] for t in seconds]

    # ------------------------------------------------------------ commands (run in the background by the panel)

    def step_arguments(self, step: str, work_dir) -> StepArguments:
        """Write a step's inputs into work_dir and return its arguments (outputs go to work_dir/out)."""
        builders = {"registration": self.registration_arguments, "zones": self.zones_arguments,
                    "detection": self.detection_arguments}
        return builders[step](Path(work_dir))

    def step_command(self, step: str, work_dir, python: Optional[str] = None) -> list[str]:
        """The argv of `step` on inputs written into work_dir."""
        return self.step_arguments(step, work_dir).command(self.capabilities, python)

    def registration_arguments(self, work: Path) -> RegistrationArguments:
        return RegistrationArguments(self.export_case(work / "case"), work / "out")

    def zones_arguments(self, work: Path) -> ZonesArguments:
        """The ZonalSegmentation module's step on the selected T2 (its defaults: TAPS gland + demo cascade),
        with the panel's PZ post-processing."""
        p = self.params
        return self.zonal_logic().zones_arguments(p.t2, work, pz_shell_mm=p.pz_shell_mm,
                                                  pz_anterior_band=p.pz_anterior_band)

    def detection_arguments(self, work: Path) -> DetectionArguments:
        """The case as acquired, plus the registration the views show (if any) as a transform file.

        With no transform on ADC/DWI the detector registers them itself, unless a
        registration node exists: then the user chose them as acquired.
        """
        p = self.params
        if not p.model:
            raise ModelError("Select a detection model (none is installed: use 'Install model from file…').")
        case_json = self.export_case(work / "case")
        transform = self.write_registration(work / TRANSFORM_FILE)
        zones = case_json.parent / "zones.nrrd"
        return DetectionArguments(case_json, p.model, work / "out", p.device,
                                  zones_file=zones if zones.is_file() else None, transform_file=transform,
                                  register=transform is None and p.registration_transform is None,
                                  all_candidates=self.writes_all_candidates(), pz_shell_mm=p.pz_shell_mm,
                                  pz_anterior_band=p.pz_anterior_band)

    def install_command(self, source: str, sha256: str = "", python: Optional[str] = None) -> list[str]:
        return InstallArguments(source, sha256).command(self.capabilities, python)

    # ------------------------------------------------------------ results back into the scene

    def load_registration_result(self, out_dir) -> object:
        """transform.h5 -> the registration transform node (re-used on re-runs); ADC/DWI placed under it."""
        p = self.params
        path = Path(out_dir) / "transform.h5"
        if not path.is_file():
            raise FormatError(f"{path}: the registration wrote no transform file.")
        node = mrml_volumes.read_transform_node(self.scene, path, "ADC/DWI → T2 registration", p.registration_transform)
        node.SetAttribute(lesion_nodes.CREATED_BY_ATTRIBUTE, "Registration")
        p.registration_transform = node
        for moving in (p.adc, p.dwi_low, p.dwi_high):
            if moving is not None:
                moving.SetAndObserveTransformNodeID(node.GetID())
        return node

    def reset_registration(self) -> None:
        """Back to no registration: ADC/DWI leave the transform node, which returns to identity."""
        p = self.params
        for moving in (p.adc, p.dwi_low, p.dwi_high):
            if moving is not None:
                moving.SetAndObserveTransformNodeID(None)
        node = p.registration_transform
        if node is not None:
            lesion_nodes.remove_with_dependents(self.scene, node)
        p.registration_transform = None

    def zonal_logic(self) -> ZonalLogic:
        """The ZonalSegmentation module's MRML logic on this scene (same extension, same rules)."""
        return ZonalLogic(self.scene)

    def load_zones_result(self, out_dir) -> object:
        """zones.nrrd (1 = CG, 2 = PZ) -> the T2's zonal segmentation node (Prostate, Central gland,
        Peripheral zone), the one the ZonalSegmentation module shows too."""
        p = self.params
        node, _ = self.zonal_logic().load_result(Path(out_dir), p.t2)
        p.zones = node
        return node

    def zones_from_label_image(self, labels: sitk.Image) -> object:
        p = self.params
        node = self.zonal_logic().segmentation_from_zones(labels, p.t2)
        p.zones = node
        return node

    def zones_image(self) -> Optional[sitk.Image]:
        """The (possibly hand-edited) zones as a label map (1 = CG, 2 = PZ) on the T2 grid; PZ = prostate - CG."""
        p = self.params
        if p.zones is None or p.t2 is None:
            return None
        return self.zonal_logic().zones_image(p.zones, p.t2)

    def keep_detection_run(self, out_dir) -> Path:
        """A finished detection step's outputs copied out of its folder, which the runner removes, so that the
        detections and their probability map stay readable for an export; the previously kept run goes.
        Returns the kept detections.json."""
        kept = Path(tempfile.mkdtemp(prefix="ProstateLesionCAD-run-"))
        try:
            shutil.copytree(Path(out_dir), kept, dirs_exist_ok=True)
        except BaseException:
            shutil.rmtree(kept, ignore_errors=True)
            raise
        if self.kept_run is not None:
            shutil.rmtree(self.kept_run, ignore_errors=True)
        self.kept_run = kept
        return kept / "detections.json"

    def forget_kept_run(self) -> None:
        """Remove the kept detection run (the panel is closing)."""
        if self.kept_run is not None:
            shutil.rmtree(self.kept_run, ignore_errors=True)
            self.kept_run = None

    def load_detections(self, path, case_id: Optional[str] = None, zones: Optional[sitk.Image] = None) -> tuple:
        """A detections file (DESIGN.md format) -> segmentation, ROIs and table for one case."""
        dset = formats.read_detections(path)
        p = self.params
        cases = dset.by_case()
        wanted = case_id or p.case_id
        if wanted and wanted in cases:
            case = cases[wanted]
        elif len(dset.cases) == 1:
            case = dset.cases[0]
        else:
            raise FormatError(f"{path}: holds {len(dset.cases)} cases; none is {wanted!r}.")
        probability = None
        if case.probability_map is not None and Path(case.probability_map).is_file():
            probability = sitk.ReadImage(str(case.probability_map))
        t2 = p.t2
        if t2 is not None:
            reference = mrml_volumes.volume_node_to_image(t2)
        elif probability is not None:
            reference = probability
        else:
            reference = lesion_masks.reference_grid(case.detections)
        if zones is None:
            zones = self.zones_image()
        model = (dset.model or {}).get("name", "")
        title = f"{case.case_id}" + (f" · {model}" if model else "")
        run_key = f"detection:{case.case_id}"
        seg, table, infos = lesion_nodes.create_lesion_nodes(self.scene, case, reference, run_key, title,
                                                             probability=probability, zones=zones,
                                                             reference_volume_node=t2)
        p.lesions, p.lesion_table, p.lesion_run_key = seg, table, run_key
        p.detections_file = str(path)
        p.case_id = case.case_id
        self.apply_filter()
        return seg, table, infos

    def apply_filter(self, min_ggg: Optional[int] = None, threshold: Optional[float] = None) -> list:
        """Criterion / threshold change: visibility and the table only, never a re-run."""
        p = self.params
        if min_ggg is not None:
            p.min_ggg = min_ggg
        if threshold is not None:
            p.score_threshold = threshold
        if not p.lesion_run_key:
            return []
        return lesion_nodes.apply_filter(self.scene, p.lesion_run_key, p.min_ggg, p.score_threshold)

    def lesion_center(self, row: int) -> Optional[tuple[float, float, float]]:
        table = self.params.lesion_table
        return lesion_nodes.table_row_center(table, row) if table is not None else None

