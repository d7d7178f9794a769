"""ZonalSegmentation's MRML glue: zone label maps <-> one segmentation node, PZ recompute, export.

`ZonalLogic(scene)` takes the scene explicitly, never imports qt, and runs with the
slicer-core wheel (Testing/test_zonal_slicer_logic.py). Heavy work runs as the
`prostate-cad zones` child process (ProstateLesionCADSlicer.background_process) on a
T2 file this logic writes; its zones.nrrd comes back as one segmentation node with the
segments Prostate, Central gland and Peripheral zone (main paper, "Automated prostate
zonal segmentation": PZ = prostate − CG), standard SNOMED CT terminology and fixed
colours, editable in Segment Editor. Both panels (ZonalSegmentation and the CAD panel)
use this logic with one run key per T2 volume (`zones_run_key`), so a T2 has one zones
node whichever panel ran the step. A re-run replaces that node only if the user has not
edited it (ProstateLesionCADSlicer.lesion_nodes ownership).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from ProstateLesionCADLib import coordinates
from ProstateLesionCADLib.capabilities import panel_steps
from ProstateLesionCADLib.lesions import masks as lesion_masks
from ProstateLesionCADLib.errors import CaseError, FormatError
from ProstateLesionCADLib.zones import ANTERIOR_BAND, BACKENDS, DEMO_MODEL, PZ_SHELL_MM
from ProstateLesionCADSlicer import lesion_nodes, mrml_volumes
from ProstateLesionCADSlicer.step_arguments import ZonesArguments, step_availability

PROSTATE, CG, PZ = "Prostate", "Central gland", "Peripheral zone"
CREATED_BY = "ZonalSegmentation"
# name -> (RGB 0..1, SNOMED CT code, meaning). CG (transition + central zone, paper) has no
# code of its own; the transition zone code is the closest standard term.
SEGMENTS = {
    PROSTATE: ((0.90, 0.85, 0.45), "41216001", "Prostate"),
    CG: ((0.50, 0.68, 0.85), "399384005", "Transition zone of the prostate"),
    PZ: ((0.85, 0.70, 0.50), "279706003", "Peripheral zone of the prostate"),
}
CATEGORY = "SCT^123037004^Anatomical Structure"
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


# The PZ post-processing as both panels show it (zones.postprocess.posterior_lateral_pz): two spin boxes
# whose lowest value, 0, reads "off" (Qt's specialValueText), so 0 mm means the step is skipped.
SHELL_OFF = 0.0
SHELL_TIP = ("Posterior-lateral PZ: peripheral-zone voxels deeper than this below the gland surface go to the "
             "central gland (the PZ is a posterior-lateral shell, about 10 mm thick on T2). Default "
             f"{PZ_SHELL_MM:g} mm; off keeps the network's CG/PZ split (prostate-cad zones --pz-shell-mm).")
BAND_TIP = ("Anterior band: also give the central gland the PZ in front of it, within this share of the CG's "
            "half-width of the midline (the anterior fibromuscular stroma). Off by default: it lowers the "
            "held-out phantom Dice (prostate-cad zones --pz-anterior-band).")
BAND_OFF_TIP = "Used only with the posterior-lateral PZ step: set a shell depth first."


def shell_from_spin_box(value: float) -> Optional[float]:
    """The spin box's value -> --pz-shell-mm in mm, None for "off"."""
    return None if value <= SHELL_OFF else float(value)


def spin_box_shell(shell_mm: Optional[float]) -> float:
    """--pz-shell-mm (None: off) -> the spin box's value."""
    return SHELL_OFF if shell_mm is None else float(shell_mm)


def anterior_band_state(shell_mm: Optional[float]) -> tuple[bool, str]:
    """(enabled?, tooltip) of the anterior band control: it acts only inside the shell step."""
    return (True, BAND_TIP) if shell_mm is not None else (False, BAND_OFF_TIP)


def zones_run_key(t2_node) -> str:
    """The run key of a T2 volume's zones node, shared by both panels."""
    return f"zones:{t2_node.GetID()}" if t2_node is not None else "zones:no-t2"


def terminology_entry(name: str) -> str:
    _, code, meaning = SEGMENTS[name]
    return "~".join([TERMINOLOGY_CONTEXT, CATEGORY, f"SCT^{code}^{meaning}", "^^", ANATOMIC_CONTEXT, "^^", "^^"])


class ZonalLogic:
    def __init__(self, scene):
        self.scene = scene
        self.capabilities = panel_steps()  # step name -> capabilities.Step

    # ------------------------------------------------------------ running the CLI

    def step_availability(self) -> dict[str, tuple[bool, str]]:
        """{"zones": (offered?, tooltip)}, from the library's capabilities."""
        return step_availability(self.capabilities, ("zones",))

    def zones_arguments(self, t2_node, work_dir: Path, backend: str = BACKENDS[0], model: str = DEMO_MODEL,
                        pz_shell_mm: Optional[float] = PZ_SHELL_MM,
                        pz_anterior_band: float = ANTERIOR_BAND) -> ZonesArguments:
        """Write the T2 into work_dir and return the step's arguments (outputs go to work_dir/out).
        pz_shell_mm (None: off), pz_anterior_band: the PZ post-processing (`zones --pz-shell-mm`, ...)."""
        return ZonesArguments(self.write_t2(t2_node, work_dir), Path(work_dir) / "out", backend, model,
                              pz_shell_mm, pz_anterior_band)

    def zones_command(self, t2_node, work_dir: Path, backend: str = BACKENDS[0], model: str = DEMO_MODEL,
                      python: Optional[str] = None, pz_shell_mm: Optional[float] = PZ_SHELL_MM,
                      pz_anterior_band: float = ANTERIOR_BAND) -> list[str]:
        """The argv of `prostate-cad zones` on the T2 volume, written into work_dir."""
        return self.zones_arguments(t2_node, work_dir, backend, model, pz_shell_mm,
                                    pz_anterior_band).command(self.capabilities, python)

    def write_t2(self, t2_node, folder: Path) -> Path:
        """The selected T2 volume as NRRD (LPS) for the child process."""
        if t2_node is None or t2_node.GetImageData() is None:
            raise CaseError("Select a T2 volume first: zonal segmentation needs an axial T2.")
        path = Path(folder) / "t2.nrrd"
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(mrml_volumes.volume_node_to_image(t2_node), str(path), True)
        return path

    # ------------------------------------------------------------ label map -> segments

    def segmentation_from_zones(self, zones: sitk.Image, reference_node=None, run_key: Optional[str] = None,
                                name: str = "Prostate zones"):
        """One segmentation node (Prostate, Central gland, Peripheral zone) from a 1 = CG, 2 = PZ label map.

        It replaces the previous node of `run_key` (default: the reference T2's) unless the user edited that one."""
        array = sitk.GetArrayFromImage(zones)
        if not np.isin(array, (0, 1, 2)).all():
            raise FormatError(f"The zone label map holds values {sorted(np.unique(array).tolist())}; expected 0, 1 = CG, 2 = PZ.")
        lesion_nodes.ensure_segmentation_converters()
        run_key = run_key or zones_run_key(reference_node)
        lesion_nodes.remove_run_nodes(self.scene, run_key)  # edited nodes are kept and renamed
        node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
        if reference_node is not None:
            node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
        ijk_to_ras = coordinates.image_ijk_to_ras_matrix(zones)
        for seg_name, mask in ((PROSTATE, array > 0), (CG, array == 1), (PZ, array == 2)):
            image = lesion_nodes.oriented_image_from_mask(lesion_masks.LesionMask((0, 0, 0), mask, "label map"), ijk_to_ras)
            sid = node.AddSegmentFromBinaryLabelmapRepresentation(image, seg_name, SEGMENTS[seg_name][0])
            node.GetSegmentation().GetSegment(sid).SetTerminology(terminology_entry(seg_name))
        # The prostate outline is drawn, the zones filled: both stay readable when overlaid.
        display = node.GetDisplayNode()
        display.SetSegmentOpacity2DFill(node.GetSegmentation().GetSegmentIdBySegmentName(PROSTATE), 0.0)
        lesion_nodes.tag_node(node, run_key, CREATED_BY)
        lesion_nodes.seal(node)
        return node

    def load_result(self, out_dir: Path, reference_node=None, run_key: Optional[str] = None):
        """zones.nrrd + zones.json of a finished run -> (segmentation node, report dict)."""
        path = Path(out_dir) / "zones.nrrd"
        if not path.is_file():
            raise FormatError(f"{path}: the zonal segmentation wrote no zones.nrrd.")
        report_path = Path(out_dir) / "zones.json"
        report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
        node = self.segmentation_from_zones(sitk.ReadImage(str(path)), reference_node, run_key)
        node.SetAttribute("ZonalSegmentation.Report", json.dumps(report))
        lesion_nodes.seal(node)
        return node, report

    # ------------------------------------------------------------ segments -> arrays

    def segment_mask(self, seg_node, name: str, reference_node) -> np.ndarray:
        """A segment as a boolean (k, j, i) array on the reference volume's grid."""
        sid = seg_node.GetSegmentation().GetSegmentIdBySegmentName(name)
        if not sid:
            raise CaseError(f"Segmentation '{seg_node.GetName()}' has no segment named '{name}'.")
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(sid)
        labelmap = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        try:
            slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg_node, ids, labelmap, reference_node)
            return sitk.GetArrayFromImage(mrml_volumes.volume_node_to_image(labelmap)) > 0
        finally:
            lesion_nodes.remove_with_dependents(self.scene, labelmap)

    def recompute_pz(self, seg_node, reference_node) -> dict:
        """PZ = Prostate − Central gland from the (edited) segments; only the PZ segment changes.

        Returns voxel counts, including CG voxels drawn outside the prostate (left as drawn,
        reported so the user can fix the outline)."""
        prostate = self.segment_mask(seg_node, PROSTATE, reference_node)
        cg = self.segment_mask(seg_node, CG, reference_node)
        pz = prostate & ~cg
        ref_img = mrml_volumes.volume_node_to_image(reference_node)
        image = lesion_nodes.oriented_image_from_mask(lesion_masks.LesionMask((0, 0, 0), pz, "PZ = prostate - CG"),
                                                      coordinates.image_ijk_to_ras_matrix(ref_img))
        sid = seg_node.GetSegmentation().GetSegmentIdBySegmentName(PZ)
        if not sid:
            sid = seg_node.GetSegmentation().AddEmptySegment("", PZ, SEGMENTS[PZ][0])
            seg_node.GetSegmentation().GetSegment(sid).SetTerminology(terminology_entry(PZ))
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            image, seg_node, sid, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
        return {"prostate": int(prostate.sum()), "cg": int(cg.sum()), "pz": int(pz.sum()),
                "cg_outside_prostate": int((cg & ~prostate).sum())}

    def zones_image(self, seg_node, reference_node) -> sitk.Image:
        """The (edited) segments as a 1 = CG, 2 = PZ label map on the reference grid (PZ = prostate − CG)."""
        prostate = self.segment_mask(seg_node, PROSTATE, reference_node)
        cg = self.segment_mask(seg_node, CG, reference_node) & prostate
        zones = np.where(cg, 1, np.where(prostate, 2, 0)).astype(np.uint8)
        out = sitk.GetImageFromArray(zones)
        out.CopyInformation(mrml_volumes.volume_node_to_image(reference_node))
        return out

    def export_labelmap(self, seg_node, t2_node):
        """The (edited) zones as a new label map volume node (1 = CG, 2 = PZ) on the T2 grid."""
        zones = self.zones_image(seg_node, t2_node)
        return mrml_volumes.image_to_volume_node(self.scene, zones, f"{seg_node.GetName()} label map", label=True)

    def export_training_pair(self, seg_node, t2_node, folder: Path, case_id: str) -> tuple[Path, Path]:
        """<case>-t2.nrrd + <case>-zones.nrrd: a pair for `prostate-cad train zones` (ground truth)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in case_id) or "case"
        t2_path, zones_path = folder / f"{safe}-t2.nrrd", folder / f"{safe}-zones.nrrd"
        zones = self.zones_image(seg_node, t2_node)
        if not sitk.GetArrayViewFromImage(zones).any():
            raise CaseError(f"Segmentation '{seg_node.GetName()}' is empty: nothing to export as ground truth.")
        sitk.WriteImage(mrml_volumes.volume_node_to_image(t2_node), str(t2_path), True)
        sitk.WriteImage(zones, str(zones_path), True)
        return t2_path, zones_path
