"""The Annotate section's Logic: seed points -> grown lesion segments -> training ground truth.

Main paper, methods, "Automated lesion growing": each lesion is grown from one point
by ProstateLesionCADLib.lesions.growing (threshold level sets on T2, high-b DWI and
Ktrans, majority vote). This module is only the MRML glue around it:

- Seeds are the control points of a vtkMRMLMarkupsFiducialNode (RAS; converted to LPS
  through ProstateLesionCADLib.coordinates). Each point's GGG is stored as a node
  attribute keyed by the control point ID (`ProstateLesionCAD.GGG.<id>`), not in the
  point description, so the annotator's own description stays free text and the grade
  survives scene save/reload (attributes are written to the .mrml). Each point also gets
  a stable seed number (`ProstateLesionCAD.SeedNumber.<id>`) that deleting other points
  does not change; it is the lesion id in the exported ground truth.
- Each seed owns one segment (ID `seed-<control point id>`) of a segmentation node,
  named `Seed n · GGGg` and coloured from ggg_palette. Segment tags record the position
  it was grown from and a fingerprint (SHA-256 of the voxel indices of its binary
  labelmap) of what this Logic last wrote. A segment whose current content no longer
  matches was edited by hand: growing skips it (and says so) unless `force=True`.
- Export writes lesions.nrrd (label map on the T2 grid, label = seed number, the
  segments as they are now, hand edits included) and ground-truth.json (DESIGN.md
  format) with lesions.annotation_files, as `prostate-cad grow` does: both or neither.

The Widget debounces point moves (a single-shot timer); `moved_seeds` is the testable
part: which seeds moved or are new since they were last grown. The panel grows through
annotate_growing (`prostate-cad grow` in the background, written into the segments by
`_write_segment` as here); `grow` runs the same rule in the calling process (scripts, tests).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from ProstateLesionCADLib import coordinates, ggg_palette
from ProstateLesionCADLib.errors import CaseError
from ProstateLesionCADLib.lesions.growing import GrowParams, Seed, grow_lesion
from ProstateLesionCADLib.lesions.annotation_files import write_annotation

from . import lesion_nodes, mrml_volumes
from .parameters import parameters

GGG_ATTRIBUTE = "ProstateLesionCAD.GGG."  # + control point ID
NUMBER_ATTRIBUTE = "ProstateLesionCAD.SeedNumber."  # + control point ID
SEGMENTATION_REFERENCE = "ProstateLesionCAD.AnnotationSegmentation"  # seeds node -> its segmentation
TAG = "ProstateLesionCAD.Annotate."
DEFAULT_GGG = 0  # shown for a new point until the annotator sets its grade; export refuses unset grades
UNGRADED_FLAG = "grade not set"
MOVE_TOLERANCE_MM = 0.01
TABLE_COLUMNS = ("Seed", "GGG", "R", "A", "S", "Volume (cm³)", "Flags")


@dataclass
class SeedRow:
    """One line of the seeds table."""

    point_id: str
    number: int
    ggg: int
    position_ras: tuple[float, float, float]
    volume_cm3: Optional[float] = None
    flags: list[str] = field(default_factory=list)
    edited: bool = False


@dataclass
class GrowOutcome:
    grown: list[str] = field(default_factory=list)  # control point IDs whose segment was (re)written
    skipped_edited: list[str] = field(default_factory=list)  # hand-edited segments left alone
    removed: list[str] = field(default_factory=list)  # segments of deleted points that were removed
    reports: dict = field(default_factory=dict)  # point ID -> lesion_growing.GrownLesion
    # grown in the background, but moved, deleted or hand-edited while it grew: left as they are now
    changed_meanwhile: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. a DWI the growing could not use

    def message(self) -> str:
        parts = [f"grew {len(self.grown)} lesion(s)"]
        if self.skipped_edited:
            parts.append(f"kept {len(self.skipped_edited)} segment(s) edited by hand (tick 'Overwrite my edits' to re-grow them)")
        if self.removed:
            parts.append(f"removed {len(self.removed)} segment(s) of deleted seeds")
        if self.changed_meanwhile:
            parts.append(f"left {len(self.changed_meanwhile)} seed(s) moved, deleted or edited while growing as they are")
        return "; ".join(parts + self.notes) + "."


def segment_id_for(point_id: str) -> str:
    return f"seed-{point_id}"


def segment_name(number: int, ggg: int) -> str:
    return f"Seed {number} · {ggg_palette.ggg_class(ggg).name}"


def _tag(segment, key: str) -> str:
    return lesion_nodes.segment_tag(segment, TAG + key)


def segment_fingerprint(seg_node, segment_id: str) -> str:
    """SHA-256 of the world voxel indices of a segment's binary labelmap (independent of padding/extent)."""
    labelmap = slicer.vtkOrientedImageData()
    seg_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    digest = hashlib.sha256()
    scalars = labelmap.GetPointData().GetScalars()
    if scalars is not None:
        e = labelmap.GetExtent()
        values = numpy_support.vtk_to_numpy(scalars).reshape(e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)
        k, j, i = np.nonzero(values)
        digest.update(np.stack([i + e[0], j + e[2], k + e[4]]).astype(np.int64).tobytes())
        m = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(m)
        digest.update(np.round(slicer.util.arrayFromVTKMatrix(m), 4).tobytes())
    return digest.hexdigest()


def _grid_image(volume_node) -> "slicer.vtkOrientedImageData":
    """An empty oriented image with the volume node's grid (extent and IJK -> RAS)."""
    image = slicer.vtkOrientedImageData()
    image.SetExtent(volume_node.GetImageData().GetExtent())
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    image.SetImageToWorldMatrix(m)
    return image


def segment_mask(seg_node, segment_id: str, volume_node) -> np.ndarray:
    """A segment's voxels resampled (nearest neighbour) onto a volume node's grid, array order (k, j, i)."""
    labelmap = slicer.vtkOrientedImageData()
    seg_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    dims = volume_node.GetImageData().GetDimensions()
    out = np.zeros(dims[::-1], bool)
    if labelmap.GetPointData().GetScalars() is None:
        return out
    resampled = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            labelmap, _grid_image(volume_node), resampled, False, False):
        raise CaseError(f"Segment '{segment_id}' could not be resampled onto '{volume_node.GetName()}'.")
    e = resampled.GetExtent()
    values = numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars()).reshape(
        e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1) > 0
    lo = [max(e[2 * d], 0) for d in range(3)]
    hi = [min(e[2 * d + 1], dims[d] - 1) for d in range(3)]
    if all(lo[d] <= hi[d] for d in range(3)):
        out[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = values[
            lo[2] - e[4]:hi[2] - e[4] + 1, lo[1] - e[2]:hi[1] - e[2] + 1, lo[0] - e[0]:hi[0] - e[0] + 1]
    return out


def set_segment_mask(seg_node, segment_id: str, mask: np.ndarray, volume_node) -> None:
    """Replace a segment's voxels by a full-grid mask (k, j, i) on a volume node's grid."""
    image = _grid_image(volume_node)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = (np.asarray(mask) > 0).astype(np.uint8).ravel()
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, seg_node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)


def check_can_grow(seeds_node, t2_node) -> None:
    """A T2 to grow on and at least one seed, or one sentence saying which is missing."""
    if t2_node is None:
        raise CaseError("Select a T2 volume to grow the lesions on.")
    if seeds_node is None or seeds_node.GetNumberOfControlPoints() == 0:
        raise CaseError("Place at least one seed point before growing.")


class AnnotateLogic:
    """Seeds (markups points) -> one grown segment per seed; takes the MRML scene explicitly."""

    def __init__(self, scene, params: Optional[GrowParams] = None):
        self.scene = scene
        self.grow_params = params or GrowParams()

    # ------------------------------------------------------------ seeds and their grades

    @staticmethod
    def point_ids(seeds_node) -> list[str]:
        return [seeds_node.GetNthControlPointID(i) for i in range(seeds_node.GetNumberOfControlPoints())]

    @staticmethod
    def position_ras(seeds_node, point_id: str) -> tuple[float, float, float]:
        index = seeds_node.GetControlPointIndexByID(point_id)
        if index < 0:
            raise CaseError(f"The point list '{seeds_node.GetName()}' has no control point with ID {point_id}.")
        return tuple(float(v) for v in seeds_node.GetNthControlPointPositionVector(index))  # type: ignore[return-value]

    @staticmethod
    def get_ggg(seeds_node, point_id: str) -> int:
        value = seeds_node.GetAttribute(GGG_ATTRIBUTE + point_id)
        return int(value) if value else DEFAULT_GGG

    @staticmethod
    def has_ggg(seeds_node, point_id: str) -> bool:
        return bool(seeds_node.GetAttribute(GGG_ATTRIBUTE + point_id))

    def set_ggg(self, seeds_node, point_id: str, ggg: int) -> None:
        """Set a seed's GGG (0..3; 4 and 5 count as 3); its segment's name and colour follow."""
        g = int(ggg)
        if not 0 <= g <= 5:
            raise CaseError(f"Seed GGG must be 0..5, got {g}.")
        seeds_node.SetAttribute(GGG_ATTRIBUTE + point_id, str(min(g, 3)))
        seg_node = self.segmentation_of(seeds_node)
        segment = seg_node.GetSegmentation().GetSegment(segment_id_for(point_id)) if seg_node else None
        if segment is not None:
            number = self.seed_number(seeds_node, point_id)
            segment.SetName(segment_name(number, g))
            segment.SetColor(*ggg_palette.ggg_class(g).rgb)
            segment.SetTag("TerminologyEntry", lesion_nodes.terminology_entry(g))

    @staticmethod
    def seed_number(seeds_node, point_id: str) -> int:
        """Stable lesion number of a point (assigned on first use: one more than any number given so far)."""
        value = seeds_node.GetAttribute(NUMBER_ATTRIBUTE + point_id)
        if value:
            return int(value)
        used = [int(seeds_node.GetAttribute(name)) for name in seeds_node.GetAttributeNames() or ()
                if name.startswith(NUMBER_ATTRIBUTE)]
        number = max(used, default=0) + 1
        seeds_node.SetAttribute(NUMBER_ATTRIBUTE + point_id, str(number))
        return number

    def seed(self, seeds_node, point_id: str) -> Seed:
        return Seed(self.seed_number(seeds_node, point_id),
                    coordinates.ras_to_lps(self.position_ras(seeds_node, point_id)),
                    self.get_ggg(seeds_node, point_id))

    def table_rows(self, seeds_node) -> list[SeedRow]:
        seg_node = self.segmentation_of(seeds_node)
        rows = []
        for pid in self.point_ids(seeds_node):
            row = SeedRow(pid, self.seed_number(seeds_node, pid), self.get_ggg(seeds_node, pid),
                          self.position_ras(seeds_node, pid))
            segment = seg_node.GetSegmentation().GetSegment(segment_id_for(pid)) if seg_node else None
            if segment is not None:
                row.volume_cm3 = float(_tag(segment, "VolumeCC") or "nan")
                row.flags = [f for f in _tag(segment, "Flags").split(",") if f]
                row.edited = self.is_edited(seg_node, pid)
                if row.edited:
                    row.flags.append("edited by hand")
            if not self.has_ggg(seeds_node, pid):
                row.flags.append(UNGRADED_FLAG)
            rows.append(row)
        return rows

    # ------------------------------------------------------------ segmentation bookkeeping

    def segmentation_of(self, seeds_node):
        return seeds_node.GetNodeReference(SEGMENTATION_REFERENCE)

    def _ensure_segmentation(self, seeds_node, t2_node):
        seg_node = self.segmentation_of(seeds_node)
        if seg_node is None:
            lesion_nodes.ensure_segmentation_converters()
            seg_node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{seeds_node.GetName()} · lesions")
            seg_node.CreateDefaultDisplayNodes()
            seg_node.SetReferenceImageGeometryParameterFromVolumeNode(t2_node)
            seeds_node.SetNodeReferenceID(SEGMENTATION_REFERENCE, seg_node.GetID())
        return seg_node

    def is_edited(self, seg_node, point_id: str) -> bool:
        """True when the segment's content differs from what this Logic last wrote (a hand edit)."""
        segment = seg_node.GetSegmentation().GetSegment(segment_id_for(point_id))
        if segment is None:
            return False
        stored = _tag(segment, "Fingerprint")
        return bool(stored) and stored != segment_fingerprint(seg_node, segment_id_for(point_id))

    def moved_seeds(self, seeds_node) -> list[str]:
        """Control point IDs that are new or moved (> 0.01 mm) since their segment was grown."""
        seg_node = self.segmentation_of(seeds_node)
        out = []
        for pid in self.point_ids(seeds_node):
            segment = seg_node.GetSegmentation().GetSegment(segment_id_for(pid)) if seg_node else None
            grown_at = _tag(segment, "GrownAtRAS") if segment is not None else ""
            if not grown_at:
                out.append(pid)
                continue
            delta = np.subtract(self.position_ras(seeds_node, pid), [float(v) for v in grown_at.split()])
            if np.linalg.norm(delta) > MOVE_TOLERANCE_MM:
                out.append(pid)
        return out

    # ------------------------------------------------------------ growing

    def sequences(self, t2_node) -> tuple[dict, Optional[sitk.Image], Optional[sitk.Image]]:
        """T2 + high-b DWI + Ktrans (the CAD panel's role selectors) on the T2 grid, and the zones, if any.

        A volume under a transform node is resampled once through that transform, as the
        views show it, by the library's registration code with the linear interpolation
        `prostate-cad grow --transform` uses (lesions.growing.growing_sequences).
        """
        from ProstateLesionCADLib.registration.register import apply_transform, read_transform

        from .cad_logic import CadLogic

        cad = CadLogic(self.scene)
        p = cad.params
        t2 = mrml_volumes.volume_node_to_image(t2_node)
        seqs: dict = {"T2": t2}
        with tempfile.TemporaryDirectory(prefix="prostate-cad-annotate-") as work:
            for role, node in (("DWI_HIGH", p.dwi_high), ("KTRANS", p.ktrans)):
                if node is None:
                    seqs[role] = None
                    continue
                image = mrml_volumes.volume_node_to_image(node)
                path = mrml_volumes.write_world_transform(self.scene, node, Path(work) / f"{role}.h5")
                seqs[role] = image if path is None else apply_transform(image, read_transform(path), t2,
                                                                        sitk.sitkLinear)
        zones = cad.zones_image() if p.t2 is not None and p.t2.GetID() == t2_node.GetID() else None
        prostate = (zones > 0) if zones is not None else None
        return seqs, prostate, zones

    def grow(self, seeds_node, t2_node, point_ids: Optional[list[str]] = None, force: bool = False,
             progress=None) -> GrowOutcome:
        """(Re)grow the given seeds (default: all) into their segments; hand-edited ones only with force."""
        check_can_grow(seeds_node, t2_node)
        seg_node = self._ensure_segmentation(seeds_node, t2_node)
        outcome = GrowOutcome()
        todo = self.point_ids(seeds_node) if point_ids is None else list(point_ids)
        if point_ids is None:  # a full grow also drops the segments of deleted points (unless edited)
            outcome.removed = self.remove_deleted_segments(seeds_node, force)
        work = [pid for pid in todo if force or not self.is_edited(seg_node, pid)]
        outcome.skipped_edited = [pid for pid in todo if pid not in work]
        if not work:
            return outcome
        seqs, prostate, zones = self.sequences(t2_node)
        t2 = seqs["T2"]
        ijk_to_ras = coordinates.image_ijk_to_ras_matrix(t2)
        for n, pid in enumerate(work):
            if progress:
                progress(n / len(work), f"growing seed {pid}")
            seed = self.seed(seeds_node, pid)
            mask, (start, _), report = grow_lesion(t2, seed, seqs, seed.id, prostate, self.grow_params, zones)
            self._write_segment(seg_node, seeds_node, pid, seed, mask, start, ijk_to_ras, report)
            outcome.grown.append(pid)
            outcome.reports[pid] = report
        if progress:
            progress(1.0, outcome.message())
        return outcome

    def remove_deleted_segments(self, seeds_node, force: bool = False) -> list[str]:
        """Remove the segments of deleted points (hand-edited ones only with force); their point IDs."""
        seg_node = self.segmentation_of(seeds_node)
        if seg_node is None:
            return []
        segmentation = seg_node.GetSegmentation()
        alive = {segment_id_for(pid) for pid in self.point_ids(seeds_node)}
        removed = []
        for i in reversed(range(segmentation.GetNumberOfSegments())):
            sid = segmentation.GetNthSegmentID(i)
            pid = _tag(segmentation.GetSegment(sid), "PointId")
            if pid and sid not in alive and (force or not self.is_edited(seg_node, pid)):
                segmentation.RemoveSegment(sid)
                removed.append(pid)
        return removed

    def grow_all(self, seeds_node, t2_node, force: bool = False, progress=None) -> GrowOutcome:
        return self.grow(seeds_node, t2_node, None, force, progress)

    def regrow(self, seeds_node, t2_node, point_id: str, force: bool = False) -> GrowOutcome:
        """Re-grow one seed's lesion only (after the seed moved); the other segments are untouched."""
        return self.grow(seeds_node, t2_node, [point_id], force)

    def regrow_moved(self, seeds_node, t2_node, force: bool = False) -> GrowOutcome:
        """What the debounced point-moved handler calls."""
        return self.grow(seeds_node, t2_node, self.moved_seeds(seeds_node), force)

    def _write_segment(self, seg_node, seeds_node, pid, seed, mask, start, ijk_to_ras, report) -> None:
        image = slicer.vtkOrientedImageData()
        nk, nj, ni = mask.shape
        image.SetExtent(start[0], start[0] + ni - 1, start[1], start[1] + nj - 1, start[2], start[2] + nk - 1)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.astype(np.uint8).ravel()
        image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
        sid = segment_id_for(pid)
        segmentation = seg_node.GetSegmentation()
        cls = ggg_palette.ggg_class(seed.ggg)
        if segmentation.GetSegment(sid) is None:
            seg_node.AddSegmentFromBinaryLabelmapRepresentation(image, segment_name(seed.id, seed.ggg), cls.rgb, sid)
        else:
            slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                image, seg_node, sid, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
        segment = segmentation.GetSegment(sid)
        segment.SetName(segment_name(seed.id, seed.ggg))
        segment.SetColor(*cls.rgb)
        segment.SetTag("TerminologyEntry", lesion_nodes.terminology_entry(seed.ggg))
        segment.SetTag(TAG + "PointId", pid)
        segment.SetTag(TAG + "GrownAtRAS", " ".join(f"{v:.4f}" for v in self.position_ras(seeds_node, pid)))
        segment.SetTag(TAG + "VolumeCC", f"{report.volume_cc:.4f}")
        segment.SetTag(TAG + "Flags", ",".join(report.flags))
        segment.SetTag(TAG + "Fingerprint", segment_fingerprint(seg_node, sid))

    # ------------------------------------------------------------ export

    def label_map(self, seeds_node, t2_node) -> sitk.Image:
        """The segments as they are now (hand edits included) on the T2 grid; label = seed number.

        Where segments overlap, the voxel keeps the lower seed number (as grow_lesions does).
        """
        seg_node = self.segmentation_of(seeds_node)
        if seg_node is None:
            raise CaseError("Grow the lesions before exporting: the seeds have no segmentation yet.")
        t2 = mrml_volumes.volume_node_to_image(t2_node)
        labels = np.zeros(sitk.GetArrayViewFromImage(t2).shape, np.uint16)
        numbered = sorted((self.seed_number(seeds_node, pid), pid) for pid in self.point_ids(seeds_node))
        for number, pid in numbered:
            sid = segment_id_for(pid)
            if seg_node.GetSegmentation().GetSegment(sid) is None:
                raise CaseError(f"Seed {number} has no grown segment: press Grow before exporting.")
            mask = segment_mask(seg_node, sid, t2_node)
            labels[(labels == 0) & mask] = number
        out = sitk.GetImageFromArray(labels)
        out.CopyInformation(t2)
        return out

    def export(self, seeds_node, t2_node, out_dir, case_id: Optional[str] = None, overwrite: bool = True) -> Path:
        """Write out_dir/lesions.nrrd and out_dir/ground-truth.json (DESIGN.md) for training; returns the JSON path.
        The folder's other files stay. Export is the annotator saving the segments as they are now, so
        by default it replaces the two files an earlier export of the folder wrote (both or neither);
        `overwrite=False` refuses a folder that holds them."""
        if t2_node is None or seeds_node is None or seeds_node.GetNumberOfControlPoints() == 0:
            raise CaseError("Select a T2 volume and a seed list with at least one point to export.")
        ungraded = sorted(self.seed_number(seeds_node, pid) for pid in self.point_ids(seeds_node)
                          if not self.has_ggg(seeds_node, pid))
        if ungraded:  # saving them as GGG0 would teach a model that they are benign
            many = len(ungraded) > 1
            raise CaseError(f"Seed{'s' if many else ''} {', '.join(map(str, ungraded))} {'have' if many else 'has'} "
                            "no grade group yet: choose the GGG in the seed table before exporting.")
        labels = self.label_map(seeds_node, t2_node)
        seeds = sorted((self.seed(seeds_node, pid) for pid in self.point_ids(seeds_node)), key=lambda s: s.id)
        case_id = case_id or parameters(self.scene).case_id or t2_node.GetName()
        return write_annotation(out_dir, case_id, labels, seeds, overwrite=overwrite)
