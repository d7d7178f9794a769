"""The Annotate section's Logic on real MRML classes (slicer-core wheel): seeds from a real
vtkMRMLMarkupsFiducialNode, one grown segment per seed in a real vtkMRMLSegmentationNode
(names, colours, seed voxel inside), re-growing only moved seeds, the manual-edit
protection, GGG edits, export round trip; and the embedded ProstateX-0000 sample lesion."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ProstateLesionCAD"))

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is a dev dependency")  # noqa: E402

from ProstateLesionCADLib import coordinates, ggg_palette  # noqa: E402
from ProstateLesionCADLib.errors import CaseError  # noqa: E402
from ProstateLesionCADLib.formats import read_ground_truth  # noqa: E402
from ProstateLesionCADSlicer import mrml_volumes  # noqa: E402
from ProstateLesionCADSlicer.annotate_logic import AnnotateLogic, segment_id_for, segment_mask, set_segment_mask  # noqa: E402
from ProstateLesionCADSlicer.parameters import parameters  # noqa: E402

CENTRES = ((24, 24, 6), (56, 40, 6))  # voxel (i, j, k) of two dark 8 mm lesions


def _volume() -> sitk.Image:
    """A bright gland with two dark spheres (radius 4 mm), 0.5 x 0.5 x 3 mm voxels, off-origin."""
    size = (80, 64, 12)
    arr = np.full(size[::-1], 300.0, np.float32)
    z, y, x = np.mgrid[:size[2], :size[1], :size[0]]
    for ci, cj, ck in CENTRES:
        arr[((x - ci) ** 2 + (y - cj) ** 2) * 0.25 + ((z - ck) * 3.0) ** 2 <= 16.0] = 100.0
    arr += np.random.default_rng(0).normal(0, 5, arr.shape).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.5, 3.0))
    img.SetOrigin((-12.0, 8.0, -40.0))
    return img


@pytest.fixture
def scene_setup():
    scene = slicer.vtkMRMLScene()
    t2 = _volume()
    t2_node = mrml_volumes.image_to_volume_node(scene, t2, "T2")
    parameters(scene).t2 = t2_node
    seeds = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Seeds")
    for c in CENTRES:
        seeds.AddControlPoint(*coordinates.lps_to_ras(t2.TransformIndexToPhysicalPoint(c)), "")
    logic = AnnotateLogic(scene)
    ids = logic.point_ids(seeds)
    logic.set_ggg(seeds, ids[0], 2)
    logic.set_ggg(seeds, ids[1], 0)
    return scene, t2, t2_node, seeds, logic, ids


def _segment_array(seg_node, point_id, t2_node) -> np.ndarray:
    return segment_mask(seg_node, segment_id_for(point_id), t2_node)


def test_grow_creates_named_coloured_segments_containing_their_seeds(scene_setup):
    scene, t2, t2_node, seeds, logic, ids = scene_setup
    outcome = logic.grow_all(seeds, t2_node)
    assert outcome.grown == ids and not outcome.skipped_edited
    seg_node = logic.segmentation_of(seeds)
    assert seg_node.IsA("vtkMRMLSegmentationNode") and seg_node.GetSegmentation().GetNumberOfSegments() == 2
    for pid, (ci, cj, ck), ggg, number in zip(ids, CENTRES, (2, 0), (1, 2)):
        segment = seg_node.GetSegmentation().GetSegment(segment_id_for(pid))
        assert segment.GetName() == f"Seed {number} · GGG{ggg}"
        assert np.allclose(segment.GetColor(), ggg_palette.ggg_class(ggg).rgb)
        arr = _segment_array(seg_node, pid, t2_node)
        assert arr[ck, cj, ci]
        volume = arr.sum() * 0.5 * 0.5 * 3.0 / 1000.0
        assert 0.15 < volume < 0.45  # true sphere 4/3·π·4³ mm³ ≈ 0.27 cm³
        assert abs(outcome.reports[pid].volume_cc - volume) < 1e-6
    rows = logic.table_rows(seeds)
    assert [r.number for r in rows] == [1, 2] and [r.ggg for r in rows] == [2, 0]
    assert all(r.volume_cm3 > 0.15 and not r.edited for r in rows)
    assert logic.moved_seeds(seeds) == []


def test_moved_seed_regrows_only_its_own_segment(scene_setup):
    scene, t2, t2_node, seeds, logic, ids = scene_setup
    logic.grow_all(seeds, t2_node)
    seg_node = logic.segmentation_of(seeds)
    before = {pid: _segment_array(seg_node, pid, t2_node) for pid in ids}
    other_mtime = seg_node.GetSegmentation().GetSegment(segment_id_for(ids[0])).GetMTime()
    # move seed 2 by 1 mm in A (inside its lesion still), then onto lesion 1's twin position shifted
    ras = np.array(logic.position_ras(seeds, ids[1])) + np.array([1.0, 1.0, 0.0])
    seeds.SetNthControlPointPosition(1, *ras)
    assert logic.moved_seeds(seeds) == [ids[1]]
    outcome = logic.regrow_moved(seeds, t2_node)
    assert outcome.grown == [ids[1]]
    assert seg_node.GetSegmentation().GetSegment(segment_id_for(ids[0])).GetMTime() == other_mtime
    assert np.array_equal(_segment_array(seg_node, ids[0], t2_node), before[ids[0]])
    after = _segment_array(seg_node, ids[1], t2_node)
    assert not np.array_equal(after, before[ids[1]])  # grown from the new point
    assert (after & before[ids[1]]).sum() / before[ids[1]].sum() > 0.7  # still the same lesion
    assert logic.moved_seeds(seeds) == []


def test_hand_edited_segment_is_never_overwritten_unless_forced(scene_setup):
    scene, t2, t2_node, seeds, logic, ids = scene_setup
    logic.grow_all(seeds, t2_node)
    seg_node = logic.segmentation_of(seeds)
    edited = _segment_array(seg_node, ids[0], t2_node).astype(np.uint8)
    edited[6, 5:10, 5:10] = 1  # the annotator paints extra voxels
    set_segment_mask(seg_node, segment_id_for(ids[0]), edited, t2_node)
    assert logic.is_edited(seg_node, ids[0]) and not logic.is_edited(seg_node, ids[1])
    assert [r.edited for r in logic.table_rows(seeds)] == [True, False]

    seeds.SetNthControlPointPosition(0, *(np.array(logic.position_ras(seeds, ids[0])) + [0.5, 0, 0]))
    outcome = logic.grow_all(seeds, t2_node)
    assert outcome.skipped_edited == [ids[0]] and outcome.grown == [ids[1]]
    assert "edited by hand" in outcome.message()
    assert np.array_equal(_segment_array(seg_node, ids[0], t2_node), edited > 0)
    assert logic.regrow(seeds, t2_node, ids[0]).skipped_edited == [ids[0]]

    forced = logic.grow_all(seeds, t2_node, force=True)
    assert ids[0] in forced.grown
    now = _segment_array(seg_node, ids[0], t2_node)
    assert not now[6, 5:10, 5:10].any() and not logic.is_edited(seg_node, ids[0])


def test_ggg_edits_follow_into_names_colours_and_export(scene_setup, tmp_path):
    scene, t2, t2_node, seeds, logic, ids = scene_setup
    logic.grow_all(seeds, t2_node)
    seg_node = logic.segmentation_of(seeds)
    logic.set_ggg(seeds, ids[1], 5)  # GGG 5 counts as GGG3+
    segment = seg_node.GetSegmentation().GetSegment(segment_id_for(ids[1]))
    assert segment.GetName() == "Seed 2 · GGG3+"
    assert np.allclose(segment.GetColor(), ggg_palette.PALETTE[3].rgb)
    assert not logic.is_edited(seg_node, ids[1])  # a grade change is not a voxel edit
    with pytest.raises(CaseError, match="GGG"):
        logic.set_ggg(seeds, ids[1], 7)

    json_path = logic.export(seeds, t2_node, tmp_path / "gt", case_id="P1")
    gt = read_ground_truth(json_path).by_case()["P1"]
    assert [(les.id, les.ggg, les.label) for les in gt.lesions] == [(1, 2, 1), (2, 3, 2)]
    assert gt.patient_ggg == 3
    exported = sitk.GetArrayFromImage(sitk.ReadImage(str(gt.lesion_mask)))
    for les, c in zip(gt.lesions, CENTRES):
        assert np.allclose(les.seed_lps, t2.TransformIndexToPhysicalPoint(c), atol=1e-3)
        # center_lps: the middle of the exported segment's bounding box, what lesion matching measures to
        k, j, i = np.nonzero(exported == les.label)
        middle = [(i.min() + i.max()) / 2, (j.min() + j.max()) / 2, (k.min() + k.max()) / 2]
        assert np.allclose(les.center_lps, t2.TransformContinuousIndexToPhysicalPoint(middle), atol=1e-3)
    labels = sitk.ReadImage(str(gt.lesion_mask))
    assert labels.GetSize() == t2.GetSize()
    assert np.allclose(labels.GetOrigin(), t2.GetOrigin()) and np.allclose(labels.GetSpacing(), t2.GetSpacing())
    assert np.allclose(labels.GetDirection(), t2.GetDirection())
    arr = sitk.GetArrayFromImage(labels)
    for number, (pid, (ci, cj, ck)) in enumerate(zip(ids, CENTRES), start=1):
        assert arr[ck, cj, ci] == number
        assert np.array_equal(arr == number, _segment_array(seg_node, pid, t2_node))
    assert sorted(p.name for p in (tmp_path / "gt").iterdir()) == ["ground-truth.json", "lesions.nrrd"]


def test_deleted_seed_drops_its_segment_and_new_seed_is_numbered_after(scene_setup):
    scene, t2, t2_node, seeds, logic, ids = scene_setup
    logic.grow_all(seeds, t2_node)
    seeds.RemoveNthControlPoint(0)
    seeds.AddControlPoint(*coordinates.lps_to_ras(t2.TransformIndexToPhysicalPoint(CENTRES[0])), "")
    new_id = logic.point_ids(seeds)[1]
    assert logic.moved_seeds(seeds) == [new_id]
    outcome = logic.grow_all(seeds, t2_node)
    assert outcome.removed == [ids[0]] and outcome.grown == [ids[1], new_id]
    seg = logic.segmentation_of(seeds).GetSegmentation()
    assert seg.GetNumberOfSegments() == 2 and seg.GetSegment(segment_id_for(new_id)).GetName() == "Seed 3 · GGG0"


def test_export_refuses_seeds_without_a_grade(scene_setup, tmp_path):
    scene, t2, t2_node, seeds, logic, ids = scene_setup
    seeds.AddControlPoint(*coordinates.lps_to_ras(t2.TransformIndexToPhysicalPoint(CENTRES[0])), "")
    new_id = logic.point_ids(seeds)[-1]
    logic.grow_all(seeds, t2_node)
    assert [r.flags.count("grade not set") for r in logic.table_rows(seeds)] == [0, 0, 1]
    with pytest.raises(CaseError, match="Seed 3 has no grade group yet"):
        logic.export(seeds, t2_node, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    logic.set_ggg(seeds, new_id, 0)  # benign, said on purpose
    assert "grade not set" not in logic.table_rows(seeds)[2].flags
    gt = read_ground_truth(logic.export(seeds, t2_node, tmp_path / "out", case_id="P1")).by_case()["P1"]
    assert [les.ggg for les in gt.lesions] == [2, 0, 0]


def test_bad_input_gives_clear_errors(scene_setup, tmp_path):
    scene, t2, t2_node, seeds, logic, ids = scene_setup
    with pytest.raises(CaseError, match="Grow the lesions before exporting"):
        logic.export(seeds, t2_node, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    empty = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Empty")
    with pytest.raises(CaseError, match="at least one seed"):
        logic.grow_all(empty, t2_node)
    seeds.AddControlPoint(500.0, 500.0, 500.0, "")
    with pytest.raises(CaseError, match="outside the T2 image"):
        logic.grow_all(seeds, t2_node)


def test_prostatex_0000_sample_lesion_from_markups(repo_dir):
    """The embedded sample: T2 + DWI b800 as volume nodes (DWI_HIGH role), the known lesion's point."""
    sample = repo_dir / "Resources" / "Sample" / "ProstateX-0000"
    scene = slicer.vtkMRMLScene()
    t2_node = mrml_volumes.image_to_volume_node(scene, sitk.ReadImage(str(sample / "t2.nrrd")), "t2")
    dwi_node = mrml_volumes.image_to_volume_node(scene, sitk.ReadImage(str(sample / "dwi-b800.nrrd")), "dwi b800")
    params = parameters(scene)
    params.t2, params.dwi_high = t2_node, dwi_node
    seeds = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Seeds")
    seeds.AddControlPoint(-25.7457, -31.8707, -38.511, "")  # RAS of LPS (25.7457, 31.8707, -38.511)
    logic = AnnotateLogic(scene)
    pid = logic.point_ids(seeds)[0]
    logic.set_ggg(seeds, pid, 3)
    report = logic.grow_all(seeds, t2_node).reports[pid]
    assert {v.sequence: v.status for v in report.votes}["DWI_HIGH"] != "absent"
    assert 0.1 <= report.volume_cc <= 10.0
    arr = _segment_array(logic.segmentation_of(seeds), pid, t2_node)
    i, j, k = np.round(mrml_volumes.ras_to_ijk(t2_node, (-25.7457, -31.8707, -38.511))).astype(int)
    assert arr[k, j, i]


def test_overlapping_segments_regrow_without_touching_each_other(scene_setup):
    """Two seeds in one lesion grow overlapping segments; re-growing one leaves the other intact and unflagged."""
    scene, t2, t2_node, seeds, logic, ids = scene_setup
    ras = np.array(logic.position_ras(seeds, ids[0])) + [0.5, 0.5, 0.0]
    seeds.AddControlPoint(*ras, "")
    third = logic.point_ids(seeds)[2]
    logic.grow_all(seeds, t2_node)
    seg_node = logic.segmentation_of(seeds)
    first = _segment_array(seg_node, ids[0], t2_node)
    assert (first & _segment_array(seg_node, third, t2_node)).sum() > 0.7 * first.sum()
    seeds.SetNthControlPointPosition(2, *(ras + [0.5, 0.0, 0.0]))
    assert logic.regrow_moved(seeds, t2_node).grown == [third]
    assert np.array_equal(_segment_array(seg_node, ids[0], t2_node), first)
    assert not any(logic.is_edited(seg_node, pid) for pid in logic.point_ids(seeds))


def test_grades_and_edit_protection_survive_saving_the_segmentation(scene_setup, tmp_path):
    """Segment tags (fingerprint, grown-at position) go through .seg.nrrd: a reloaded segmentation is not 'edited'."""
    scene, t2, t2_node, seeds, logic, ids = scene_setup
    logic.grow_all(seeds, t2_node)
    storage = logic.segmentation_of(seeds).CreateDefaultStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "lesions.seg.nrrd"))
    assert storage.WriteData(logic.segmentation_of(seeds))
    reloaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reloaded")
    storage2 = reloaded.CreateDefaultStorageNode()
    scene.AddNode(storage2)
    storage2.SetFileName(str(tmp_path / "lesions.seg.nrrd"))
    assert storage2.ReadData(reloaded)
    seeds.SetNodeReferenceID("ProstateLesionCAD.AnnotationSegmentation", reloaded.GetID())
    assert [reloaded.GetSegmentation().GetSegment(segment_id_for(p)).GetName() for p in ids] == ["Seed 1 · GGG2", "Seed 2 · GGG0"]
    assert not any(logic.is_edited(reloaded, p) for p in ids) and logic.moved_seeds(seeds) == []
    assert [r.ggg for r in logic.table_rows(seeds)] == [2, 0]


def test_zones_from_the_cad_panel_clip_a_lesion_to_its_zone(scene_setup):
    """With zones selected in the CAD panel, growing stays in the seed's zone and says so (flag in the table)."""
    from ProstateLesionCADSlicer.cad_logic import CadLogic

    scene, t2, t2_node, seeds, logic, ids = scene_setup
    zones = np.full(sitk.GetArrayViewFromImage(t2).shape, 1, np.uint8)  # CG
    zones[:, :, :CENTRES[0][0] - 2] = 2  # PZ cuts through lesion 1, 1 mm left of its seed
    labels = sitk.GetImageFromArray(zones)
    labels.CopyInformation(t2)
    CadLogic(scene).zones_from_label_image(labels)
    outcome = logic.grow_all(seeds, t2_node)
    assert "clipped_to_prostate" in outcome.reports[ids[0]].flags
    assert outcome.reports[ids[1]].flags == []
    arr = _segment_array(logic.segmentation_of(seeds), ids[0], t2_node)
    assert not arr[:, :, :CENTRES[0][0] - 2 - 4].any()  # nothing beyond the 2 mm margin into the PZ
    assert "clipped_to_prostate" in logic.table_rows(seeds)[0].flags


def test_growing_sees_dwi_through_its_transform_on_the_t2_grid(scene_setup):
    """A DWI volume reaches the growing as the views show it: as acquired when it sits under no
    transform, else resampled once, through its transform node, onto the T2 grid."""
    scene, t2, t2_node, seeds, logic, ids = scene_setup
    arr = np.zeros((12, 32, 40), np.float32)  # DWI's own grid: 1 x 1 x 3 mm voxels
    arr[6, 9:12, 9:12] = 1000.0  # bright around DWI voxel (10, 10, 6) = LPS (-2, 18, -22)
    dwi = sitk.GetImageFromArray(arr)
    dwi.SetSpacing((1.0, 1.0, 3.0))
    dwi.SetOrigin((-12.0, 8.0, -40.0))
    dwi_node = mrml_volumes.image_to_volume_node(scene, dwi, "DWI b800")
    parameters(scene).dwi_high = dwi_node
    seqs, _, _ = logic.sequences(t2_node)
    assert seqs["KTRANS"] is None and np.array_equal(sitk.GetArrayFromImage(seqs["T2"]), sitk.GetArrayFromImage(t2))
    assert np.array_equal(sitk.GetArrayFromImage(seqs["DWI_HIGH"]), arr)
    assert np.allclose(seqs["DWI_HIGH"].GetSpacing(), (1.0, 1.0, 3.0))
    # the registration moves it 5 mm to the patient's right (+R): 10 T2 voxels towards lower L
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(
        np.array([[1, 0, 0, 5.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])))
    dwi_node.SetAndObserveTransformNodeID(transform.GetID())
    n_nodes = scene.GetNumberOfNodes()
    seqs, _, _ = logic.sequences(t2_node)
    placed = sitk.GetArrayFromImage(seqs["DWI_HIGH"])
    assert seqs["DWI_HIGH"].GetSize() == t2.GetSize() and np.allclose(seqs["DWI_HIGH"].GetOrigin(), t2.GetOrigin())
    # the block's centre, LPS (-2, 18, -22), is T2 voxel (20, 20, 6); 5 mm to the right is 10 voxels towards lower i
    k, j, i = np.nonzero(placed)
    weights = placed[k, j, i]
    assert np.allclose([np.average(v, weights=weights) for v in (i, j, k)], (10.0, 20.0, 6.0), atol=1e-3)
    assert placed.max() == pytest.approx(1000.0)  # T2 voxels inside the block keep its value: one linear pass
    assert scene.GetNumberOfNodes() == n_nodes
