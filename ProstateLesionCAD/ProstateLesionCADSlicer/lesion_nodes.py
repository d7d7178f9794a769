"""Detections -> MRML: one segmentation node per run (one segment per lesion), one markups
ROI per detection, and a table node listing the lesions shown.

Names read `Lesion n · GGGg · 0.41` (n = rank by score), colours and SNOMED CT
terminology come from ProstateLesionCADLib.ggg_palette. Every node a run creates is
tagged with RUN_KEY_ATTRIBUTE; a re-run removes the nodes of the same key and nothing
else. A node the user edited since (segments painted, an ROI moved or renamed) no longer
matches the fingerprint stored at creation: it is kept, untagged and renamed
"… (edited)", so user work is never lost. What each lesion is (GGG, score, volume, zone,
centre) is stored on its segment as tags, so filtering works after a scene reload.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from ProstateLesionCADLib.study import case_json as case_files
from ProstateLesionCADLib import coordinates, ggg_palette
from ProstateLesionCADLib.lesions import masks as lesion_masks
from ProstateLesionCADLib.formats import DetectionCase

from slicer.util import vtkMatrixFromArray

CREATED_BY_ATTRIBUTE = "ProstateLesionCAD.CreatedBy"
RUN_KEY_ATTRIBUTE = "ProstateLesionCAD.RunKey"
FINGERPRINT_ATTRIBUTE = "ProstateLesionCAD.Fingerprint"
SEGMENT_ID_ATTRIBUTE = "ProstateLesionCAD.SegmentId"
TAG = "ProstateLesionCAD."
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
TABLE_COLUMNS = ("Lesion", "GGG", "Score", "Volume (cm³)", "Zone", "R", "A", "S")


@dataclass
class LesionInfo:
    rank: int
    detection_id: int
    ggg: int
    score: float
    volume_cm3: float
    zone: str
    center_ras: tuple[float, float, float]
    name: str
    segment_id: str = ""
    mask_source: str = ""


def ensure_segmentation_converters() -> None:
    """Register the labelmap <-> surface rules (Slicer does this at start-up; bare slicer-core does not)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    names = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for rule in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule, slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule):
        if rule.__name__ not in names:
            factory.RegisterConverterRule(rule())


def terminology_entry(ggg: int) -> str:
    """Slicer terminology string (category, type, anatomic region) for a lesion of this GGG."""
    def code(c: Optional[ggg_palette.Code]) -> str:
        return f"{c.scheme}^{c.value}^{c.meaning}" if c else "^^"
    cls = ggg_palette.ggg_class(ggg)
    return "~".join([TERMINOLOGY_CONTEXT, code(ggg_palette.CATEGORY), code(cls.type_code), code(None),
                     ANATOMIC_CONTEXT, code(ggg_palette.PROSTATE), code(None)])


# ---------------------------------------------------------------- ownership

def run_nodes(scene, run_key: str) -> list:
    nodes = []
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        if node.GetAttribute(RUN_KEY_ATTRIBUTE) == run_key:
            nodes.append(node)
    return nodes


def _segment_ids(seg_node) -> list[str]:
    segmentation = seg_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def fingerprint(node) -> str:
    """Content hash of what a user could edit: segments' voxels and names, an ROI's box and name."""
    digest = hashlib.sha256(node.GetName().encode())
    if node.IsA("vtkMRMLSegmentationNode"):
        for sid in _segment_ids(node):
            segment = node.GetSegmentation().GetSegment(sid)
            digest.update(f"{sid}|{segment.GetName()}".encode())
            labelmap = slicer.vtkOrientedImageData()
            node.GetBinaryLabelmapRepresentation(sid, labelmap)
            scalars = labelmap.GetPointData().GetScalars()
            if scalars is not None:
                values = numpy_support.vtk_to_numpy(scalars)
                digest.update(str(labelmap.GetExtent()).encode())
                digest.update(np.flatnonzero(values).tobytes())
    elif node.IsA("vtkMRMLMarkupsROINode"):
        center = [0.0] * 3
        node.GetCenter(center)
        digest.update(np.round(np.array([*center, *node.GetSize()]), 3).tobytes())
    return digest.hexdigest()


def tag_node(node, run_key: str, created_by: str) -> None:
    node.SetAttribute(RUN_KEY_ATTRIBUTE, run_key)
    node.SetAttribute(CREATED_BY_ATTRIBUTE, created_by)


def seal(node) -> None:
    """Record the content fingerprint that tells later runs whether the user edited the node."""
    node.SetAttribute(FINGERPRINT_ATTRIBUTE, fingerprint(node))


def remove_run_nodes(scene, run_key: str) -> tuple[int, list]:
    """Remove a previous run's nodes; keep (untag and rename) the ones the user edited."""
    removed, kept = 0, []
    for node in run_nodes(scene, run_key):
        stored = node.GetAttribute(FINGERPRINT_ATTRIBUTE)
        if stored and stored != fingerprint(node):
            node.RemoveAttribute(RUN_KEY_ATTRIBUTE)
            node.SetAttribute(CREATED_BY_ATTRIBUTE, node.GetAttribute(CREATED_BY_ATTRIBUTE) + " (edited by user)")
            node.SetName(node.GetName() + " (edited)")
            kept.append(node)
        else:
            remove_with_dependents(scene, node)
            removed += 1
    return removed, kept


def remove_with_dependents(scene, node) -> None:
    """Remove a node with its display and storage nodes (the scene leaves those behind)."""
    dependents = []
    if node.IsA("vtkMRMLDisplayableNode"):
        dependents += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        dependents += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for dependent in dependents:
        if dependent is not None and scene.IsNodePresent(dependent):
            scene.RemoveNode(dependent)


# ---------------------------------------------------------------- creation

def oriented_image_from_mask(mask: lesion_masks.LesionMask, ijk_to_ras: np.ndarray):
    """A binary labelmap (vtkOrientedImageData) of a cropped mask on a grid with this IJKToRAS."""
    image = slicer.vtkOrientedImageData()
    nk, nj, ni = mask.mask.shape
    i0, j0, k0 = mask.lo
    image.SetExtent(i0, i0 + ni - 1, j0, j0 + nj - 1, k0, k0 + nk - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.mask.astype(np.uint8).ravel()
    image.SetImageToWorldMatrix(vtkMatrixFromArray(ijk_to_ras))
    return image


def lesion_infos_from_case(case: DetectionCase, reference: sitk.Image, probability: Optional[sitk.Image] = None,
                           zones: Optional[sitk.Image] = None) -> list[tuple[LesionInfo, lesion_masks.LesionMask]]:
    """Rank detections by score and compute each one's mask, volume, zone and RAS centre."""
    prob = None
    if probability is not None:
        if not case_files.same_grid(probability, reference):
            probability = sitk.Resample(probability, reference, sitk.Transform(), sitk.sitkLinear, 0.0)
        prob = sitk.GetArrayFromImage(sitk.Cast(probability, sitk.sitkFloat32))
    zones_array = lesion_masks.zones_on_grid(zones, reference) if zones is not None else None
    out = []
    ordered = sorted(case.detections, key=lambda d: (-d.score, d.id))
    for rank, det in enumerate(ordered, start=1):
        mask = lesion_masks.detection_mask(det, reference, prob)
        if mask is None:
            continue
        info = LesionInfo(rank=rank, detection_id=det.id, ggg=det.ggg, score=float(det.score),
                          volume_cm3=lesion_masks.mask_volume_cm3(mask, reference),
                          zone=lesion_masks.lesion_zone(mask, zones_array) if zones_array is not None else "",
                          center_ras=coordinates.lps_to_ras(det.center_lps),
                          name=ggg_palette.lesion_name(rank, det.ggg, det.score), mask_source=mask.source)
        out.append((info, mask))
    return out


def create_lesion_nodes(scene, case: DetectionCase, reference: sitk.Image, run_key: str, title: str,
                        probability: Optional[sitk.Image] = None, zones: Optional[sitk.Image] = None,
                        reference_volume_node=None):
    """Replace the run's previous nodes with a segmentation, one ROI per lesion and a table."""
    ensure_segmentation_converters()
    remove_run_nodes(scene, run_key)
    ijk_to_ras = coordinates.image_ijk_to_ras_matrix(reference)
    seg_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"Lesions · {title}")
    seg_node.CreateDefaultDisplayNodes()
    if reference_volume_node is not None:
        seg_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    tag_node(seg_node, run_key, "Detection")
    infos = []
    for info, mask in lesion_infos_from_case(case, reference, probability, zones):
        cls = ggg_palette.ggg_class(info.ggg)
        sid = seg_node.AddSegmentFromBinaryLabelmapRepresentation(oriented_image_from_mask(mask, ijk_to_ras), info.name, cls.rgb)
        segment = seg_node.GetSegmentation().GetSegment(sid)
        segment.SetTag("TerminologyEntry", terminology_entry(info.ggg))
        for key, value in (("DetectionId", info.detection_id), ("GGG", info.ggg), ("Score", repr(info.score)),
                           ("VolumeCm3", repr(info.volume_cm3)), ("Zone", info.zone), ("Rank", info.rank),
                           ("CenterRAS", " ".join(repr(v) for v in info.center_ras)), ("MaskSource", info.mask_source)):
            segment.SetTag(TAG + key, str(value))
        info.segment_id = sid
        roi = _create_roi(scene, case, info, cls, run_key)
        roi.SetAttribute(SEGMENT_ID_ATTRIBUTE, sid)
        infos.append(info)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"Lesion table · {title}")
    tag_node(table, run_key, "Detection")
    fill_table(table, infos)
    seal(seg_node)
    return seg_node, table, infos


def _create_roi(scene, case: DetectionCase, info: LesionInfo, cls: ggg_palette.GGGClass, run_key: str):
    det = next(d for d in case.detections if d.id == info.detection_id)
    lo, hi = lesion_masks.detection_box(det)
    center, size = coordinates.lps_box_to_ras_center_size((lo, hi))
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", info.name)
    roi.CreateDefaultDisplayNodes()
    roi.SetCenter(*center)
    roi.SetSize(*size)
    display = roi.GetDisplayNode()
    display.SetSelectedColor(*cls.rgb)
    display.SetColor(*cls.rgb)
    display.SetHandlesInteractive(False)
    display.SetFillOpacity(0.0)
    tag_node(roi, run_key, "Detection")
    seal(roi)
    return roi


# ---------------------------------------------------------------- reading back, filtering, table

def segment_tag(segment, key: str) -> str:
    """A segment's tag value ('' when absent)."""
    value = vtk.reference("")
    return str(value) if segment.GetTag(key, value) else ""


def lesion_infos(seg_node) -> list[LesionInfo]:
    """The lesions of a segmentation this module created, read from its segment tags."""
    infos = []
    for sid in _segment_ids(seg_node):
        segment = seg_node.GetSegmentation().GetSegment(sid)

        def tag(key: str) -> str:
            return segment_tag(segment, TAG + key)
        if not tag("GGG"):
            continue  # a segment the user added by hand
        infos.append(LesionInfo(rank=int(tag("Rank")), detection_id=int(tag("DetectionId")), ggg=int(tag("GGG")),
                                score=float(tag("Score")), volume_cm3=float(tag("VolumeCm3")), zone=tag("Zone"),
                                center_ras=tuple(float(v) for v in tag("CenterRAS").split()), name=segment.GetName(),
                                segment_id=sid, mask_source=tag("MaskSource")))
    return sorted(infos, key=lambda i: i.rank)


def is_shown(info: LesionInfo, min_ggg: int, threshold: float) -> bool:
    """Criterion GGG>=k considers only detections predicted GGG>=k, and shows those scoring >= threshold."""
    return ggg_palette.meets_criterion(info.ggg, min_ggg) and info.score >= threshold


def apply_filter(scene, run_key: str, min_ggg: int, threshold: float) -> list[LesionInfo]:
    """Show only lesions passing the criterion and threshold: visibility and table rows, no re-run."""
    nodes = run_nodes(scene, run_key)
    segs = [n for n in nodes if n.IsA("vtkMRMLSegmentationNode")]
    if not segs:
        return []
    seg_node = segs[0]
    infos = lesion_infos(seg_node)
    shown = {i.segment_id for i in infos if is_shown(i, min_ggg, threshold)}
    display = seg_node.GetDisplayNode()
    for info in infos:
        if display is not None:
            display.SetSegmentVisibility(info.segment_id, info.segment_id in shown)
    for node in nodes:
        if node.IsA("vtkMRMLMarkupsROINode") and node.GetDisplayNode() is not None:
            node.GetDisplayNode().SetVisibility(node.GetAttribute(SEGMENT_ID_ATTRIBUTE) in shown)
        if node.IsA("vtkMRMLTableNode"):
            fill_table(node, [i for i in infos if i.segment_id in shown])
    return [i for i in infos if i.segment_id in shown]


def fill_table(table, infos: list[LesionInfo]) -> None:
    """(Re)write the lesion table: one row per lesion shown."""
    wasModified = table.StartModify()
    table.RemoveAllColumns()
    kinds = {"Lesion": vtk.vtkStringArray, "GGG": vtk.vtkIntArray, "Zone": vtk.vtkStringArray}
    columns = {}
    for name in TABLE_COLUMNS:
        array = kinds.get(name, vtk.vtkDoubleArray)()
        array.SetName(name)
        columns[name] = array
    for info in infos:
        columns["Lesion"].InsertNextValue(info.name)
        columns["GGG"].InsertNextValue(info.ggg)
        columns["Score"].InsertNextValue(round(info.score, 3))
        columns["Volume (cm³)"].InsertNextValue(round(info.volume_cm3, 3))
        columns["Zone"].InsertNextValue(info.zone)
        for axis, value in zip("RAS", info.center_ras):
            columns[axis].InsertNextValue(round(value, 2))
    for name in TABLE_COLUMNS:
        table.AddColumn(columns[name])
    table.EndModify(wasModified)


def table_row_center(table, row: int) -> Optional[tuple[float, float, float]]:
    """RAS centre of a table row (used to centre the slice views on a clicked lesion)."""
    t = table.GetTable()
    if row < 0 or row >= t.GetNumberOfRows():
        return None
    return tuple(float(t.GetColumnByName(axis).GetValue(row)) for axis in "RAS")
