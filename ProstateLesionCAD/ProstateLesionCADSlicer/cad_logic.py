"""The CAD panel's logic: MRML glue between the scene and ProstateLesionCADLib.

`CadLogic(scene)` never reaches for a global scene, never imports qt, and runs with the
slicer-core wheel (Testing/test_cad_logic.py). Heavy work is not done here: steps run
as `prostate-cad <verb>` child processes (background_process.py) on files this logic
writes from the nodes (`export_case`), and their outputs come back as nodes
(`load_*_result`). A step is offered only when the library has its verb.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import SimpleITK as sitk

from ProstateLesionCADLib import formats, ggg_palette
from ProstateLesionCADLib.lesions import masks as lesion_masks
from ProstateLesionCADLib.errors import CaseError, FormatError, ModelError

from . import lesion_nodes, mrml_volumes
from .background_process import cli_command
from .parameters import CadParameters, parameters

B_VALUE_ATTRIBUTE = "ProstateLesionCAD.BValue"
TIME_ATTRIBUTE = "ProstateLesionCAD.TimeSeconds"
ROLE_ATTRIBUTE = "ProstateLesionCAD.Role"
DEFAULT_B = {"DWI_LOW": 400.0, "DWI_HIGH": 800.0}  # when a DWI volume carries no b-value

DETECTION_TASKS = ("detector", "focalnet")  # model tasks `prostate-cad detect` dispatches on

# Step -> the CLI verb it needs.
STEP_VERBS = {"registration": "register", "zones": "zones", "detection": "detect"}


def cli_parser_choices() -> dict:
    """Verb -> its argparse parser, from the CLI's own verb discovery."""
    from ProstateLesionCADLib import cli

    parser = cli.build_parser()
    for action in parser._subparsers._group_actions:  # argparse keeps sub-parsers here
        return dict(action.choices)
    return {}


class CadLogic:
    """MRML glue of the ProstateLesionCAD panel; takes the scene explicitly."""

    def __init__(self, scene):
        self.scene = scene
        self._verbs: Optional[dict] = None

    # ------------------------------------------------------------ parameters, steps, models

    @property
    def params(self) -> CadParameters:
        return parameters(self.scene)

    def verbs(self) -> dict:
        if self._verbs is None:
            self._verbs = cli_parser_choices()
        return self._verbs

    def step_availability(self) -> dict[str, tuple[bool, str]]:
        """Step -> (offered?, tooltip). A step whose verb the library lacks is not offered."""
        verbs = self.verbs()
        out = {}
        for step, verb in STEP_VERBS.items():
            if verb in verbs:
                out[step] = (True, verbs[verb].description or f"prostate-cad {verb}")
            else:
                out[step] = (False, f"Not available: this version of the library has no 'prostate-cad {verb}'.")
        return out

    def verb_supports(self, verb: str, option: str, value: Optional[str] = None) -> bool:
        """Whether `prostate-cad <verb>` has `option` (and accepts `value` when it has fixed choices)."""
        parser = self.verbs().get(verb)
        if parser is None:
            return False
        for action in parser._actions:
            if option in action.option_strings:
                return value is None or not action.choices or value in action.choices
        return False

    @staticmethod
    def detector_models() -> list:
        """Installed packages `prostate-cad detect` runs: Retina U-Net ("detector") and FocalNet."""
        from ProstateLesionCADLib.models.package import installed_packages

        return [p for p in installed_packages() if p.task in DETECTION_TASKS] + installed_packages(task="focalnet")  # `detect` runs both

    @staticmethod
    def model_presets(package, min_ggg: int) -> Optional[dict[str, float]]:
        """{'max_sensitivity': t, 'balanced': t} for criterion GGG>=k, or None when the model has none."""
        if package is None:
            return None
        entry = package.thresholds(f"GGG>={min_ggg}")
        if not entry or "max_sensitivity" not in entry or "balanced" not in entry:
            return None
        return {"max_sensitivity": float(entry["max_sensitivity"]), "balanced": float(entry["balanced"])}

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

    def _moving_image(self, node, work: Path, registered: bool) -> sitk.Image:
        """ADC/DWI as registered: when under a transform node, resampled through it (as Slicer shows it)."""
        image = mrml_volumes.volume_node_to_image(node)
        transform_node = mrml_volumes.parent_transform(node)
        if transform_node is None or not registered:
            return image
        # Slicer writes the node's "from parent" transform, i.e. ITK's resampling transform
        # (T2 world -> acquisition): resampling the image onto its own grid through it, as the
        # registration library does, gives exactly what the views show.
        from ProstateLesionCADLib.registration import register as registration

        path = mrml_volumes.write_transform_to_itk_file(self.scene, transform_node, work / "registration.h5")
        try:
            # the same resampling the registration library applies to its own output
            return registration.apply_transform(image, sitk.ReadTransform(str(path)))
        finally:
            path.unlink(missing_ok=True)

    def case_from_nodes(self, work_dir, registered: bool = True) -> "Case":
        """The selected inputs as the library's Case (zones if any).

        registered: ADC/DWI as the views show them (through their transform node); False
        gives the acquisitions as they are, which a new registration must start from.
        """
        from ProstateLesionCADLib.study.case import Case, SeriesInfo

        p = self.params
        if p.t2 is None:
            raise CaseError("Select a T2 volume (the T2 input is required).")
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
        case = Case(case_id=p.case_id or p.t2.GetName(), t2=mrml_volumes.volume_node_to_image(p.t2))
        used = [("T2", p.t2)]
        if p.adc is not None:
            case.adc = self._moving_image(p.adc, work, registered)
            used.append(("ADC", p.adc))
        for role in ("DWI_LOW", "DWI_HIGH"):
            node = p.input(role)
            if node is not None:
                b = self.b_value_of(node, role)
                case.dwi[b] = self._moving_image(node, work, registered)
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

    def export_case(self, out_dir, registered: bool = True) -> Path:
        """Write the selected inputs as NRRD + case.json (the library's case format) for the CLI."""
        from ProstateLesionCADLib.study.case_json import write_case_files

        out = Path(out_dir)
        case = self.case_from_nodes(out.parent / f".{out.name}-work", registered)
        try:
            return write_case_files(case, out)
        finally:
            import shutil

            shutil.rmtree(out.parent / f".{out.name}-work", ignore_errors=True)

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

    def step_command(self, step: str, work_dir, python: Optional[str] = None) -> list[str]:
        """Export the inputs into work_dir/case and return the argv of `step` writing to work_dir/out.

        Registration starts from the acquisitions (a re-run must not stack on the current
        transform); zones and detection see ADC/DWI as registered in the scene.
        """
        work = Path(work_dir)
        case_json = self.export_case(work / "case", registered=(step != "registration"))
        builder = {"registration": self.registration_command, "zones": self.zones_command,
                   "detection": self.detection_command}[step]
        return builder(case_json, work / "out", python)

    def registration_command(self, case_json: Path, out_dir: Path, python: Optional[str] = None) -> list[str]:
        args = [case_json, "--out", out_dir]
        if self.verb_supports("register", "--preset", "fast"):
            args += ["--preset", "fast"]  # interactive use: the documented fast preset
        return cli_command("register", args, python)

    def zones_command(self, case_json: Path, out_dir: Path, python: Optional[str] = None) -> list[str]:
        """The ZonalSegmentation module's command on the exported T2 (its defaults: TAPS gland + demo cascade)."""
        return self.zonal_logic().zones_command(Path(case_json).parent / "t2.nrrd", out_dir, python=python)

    def detection_command(self, case_json: Path, out_dir: Path, python: Optional[str] = None) -> list[str]:
        p = self.params
        if not p.model:
            raise ModelError("Select a detection model (none is installed: use 'Install model from file…').")
        args = [case_json, "--model", p.model, "--out", out_dir]
        if self.verb_supports("detect", "--device"):
            args += ["--device", p.device]
        # The exported ADC/DWI already went through the (possibly hand-corrected) transform
        # node: the detector must not register them again.
        if p.registration_transform is not None and self.verb_supports("detect", "--no-register"):
            args.append("--no-register")
        zones = Path(case_json).parent / "zones.nrrd"
        if zones.is_file() and self.verb_supports("detect", "--zones"):
            args += ["--zones", zones]
        return cli_command("detect", args, python)

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

    def zonal_logic(self):
        """The ZonalSegmentation module's MRML logic on this scene (same extension, same rules)."""
        from ProstateLesionCADSlicer.zonal_logic import ZonalLogic

        return ZonalLogic(self.scene)

    def _zones_run_key(self) -> str:
        return f"zones:{self.params.case_id or 'case'}"

    def load_zones_result(self, out_dir) -> object:
        """zones.nrrd (1 = CG, 2 = PZ) -> the zonal segmentation node (Prostate, Central gland,
        Peripheral zone), replacing the previous run's unless the user edited it."""
        p = self.params
        node, _ = self.zonal_logic().load_result(Path(out_dir), p.t2, self._zones_run_key())
        p.zones = node
        return node

    def zones_from_label_image(self, labels: sitk.Image) -> object:
        p = self.params
        node = self.zonal_logic().segmentation_from_zones(labels, p.t2, self._zones_run_key())
        p.zones = node
        return node

    def zones_image(self) -> Optional[sitk.Image]:
        """The (possibly hand-edited) zones as a label map (1 = CG, 2 = PZ) on the T2 grid; PZ = prostate - CG."""
        p = self.params
        if p.zones is None or p.t2 is None:
            return None
        return self.zonal_logic().zones_image(p.zones, p.t2)

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


def colour_legend() -> list[tuple[str, str, str]]:
    """(name, description, hex colour) per GGG class, for the panel's legend."""
    return [(c.name, c.description, c.hex) for c in ggg_palette.PALETTE.values()]
