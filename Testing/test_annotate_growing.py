"""Growing seeds in the background (ProstateLesionCADSlicer.annotate_growing) on real MRML classes:
a real `prostate-cad grow` child process of the panel's ProcessRunner, its lesions read back into
the seeds' segments.

- the same segments, volumes and flags as growing in Slicer's process (AnnotateLogic.grow), with
  zones from the CAD panel and a DWI under a transform node;
- the annotator's edits while a grow runs win: a seed moved, re-graded or deleted meanwhile, a
  segment painted meanwhile;
- a grow asked for while one runs waits and runs next (two requests merged into one).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ProstateLesionCAD"))

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is a dev dependency")  # noqa: E402

from ProstateLesionCADLib import ggg_palette  # noqa: E402
from ProstateLesionCADLib.errors import CaseError  # noqa: E402
from ProstateLesionCADSlicer import mrml_volumes  # noqa: E402
from ProstateLesionCADSlicer.annotate_growing import MOVED, GrowQueue, plan_grow, write_grow_inputs  # noqa: E402
from ProstateLesionCADSlicer.annotate_logic import segment_id_for, segment_mask, segment_name, set_segment_mask  # noqa: E402
from ProstateLesionCADSlicer.cad_logic import CadLogic  # noqa: E402
from ProstateLesionCADSlicer.parameters import parameters  # noqa: E402

from test_annotate_logic import CENTRES, scene_setup  # noqa: E402,F401  (the fixture)

TIMEOUT_S = 300


def _mask(logic, seeds, pid, t2_node) -> np.ndarray:
    return segment_mask(logic.segmentation_of(seeds), segment_id_for(pid), t2_node)


def _grow(queue, seeds, t2_node, point_ids=None, force=False):
    assert queue.request(seeds, t2_node, point_ids, force) is None and queue.running
    updates = queue.wait(TIMEOUT_S)
    assert len(updates) == 1 and not updates[0].error, updates[-1].error
    return updates[0].outcome


def _with_zones_and_shifted_dwi(scene, t2):
    """Zones cutting lesion 1 (as in test_annotate_logic) and a DWI b800 under a 1 mm translation."""
    zones = np.full(sitk.GetArrayViewFromImage(t2).shape, 1, np.uint8)
    zones[:, :, :CENTRES[0][0] - 2] = 2
    labels = sitk.GetImageFromArray(zones)
    labels.CopyInformation(t2)
    CadLogic(scene).zones_from_label_image(labels)
    dwi = sitk.Resample(t2, t2, sitk.Transform(), sitk.sitkLinear)  # dark lesions in a bright gland, like T2
    dwi_node = mrml_volumes.image_to_volume_node(scene, dwi, "DWI b800")
    parameters(scene).dwi_high = dwi_node
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(
        np.array([[1, 0, 0, 1.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])))
    dwi_node.SetAndObserveTransformNodeID(transform.GetID())


def test_background_grow_gives_the_segments_growing_in_slicer_gives(scene_setup, tmp_path):
    scene, t2, t2_node, seeds, logic, ids = scene_setup
    _with_zones_and_shifted_dwi(scene, t2)
    job = plan_grow(logic, seeds, t2_node)
    argv = write_grow_inputs(logic, job, tmp_path)
    assert argv[3] == "grow" and "--zones" in argv and "--transform" in argv

    direct = logic.grow_all(seeds, t2_node, force=True)
    expected = {pid: _mask(logic, seeds, pid, t2_node) for pid in ids}
    assert all(expected[pid].any() for pid in ids)
    assert "clipped_to_prostate" in direct.reports[ids[0]].flags

    queue = GrowQueue(logic)
    outcome = _grow(queue, seeds, t2_node, force=True)  # force: the segments are this logic's own, not edits
    assert outcome.grown == ids and not outcome.changed_meanwhile
    for pid in ids:
        assert np.array_equal(_mask(logic, seeds, pid, t2_node), expected[pid]), pid
        assert outcome.reports[pid].volume_cc == pytest.approx(direct.reports[pid].volume_cc, abs=1e-4)
        assert outcome.reports[pid].flags == direct.reports[pid].flags
    rows = logic.table_rows(seeds)
    assert [r.flags for r in rows] == [direct.reports[ids[0]].flags, []]
    assert logic.moved_seeds(seeds) == [] and not any(logic.is_edited(logic.segmentation_of(seeds), p) for p in ids)
    segment = logic.segmentation_of(seeds).GetSegmentation().GetSegment(segment_id_for(ids[0]))
    assert segment.GetName() == "Seed 1 · GGG2"
    assert np.allclose(segment.GetColor(), ggg_palette.ggg_class(2).rgb)
    assert not queue.runner.running


def test_edits_made_while_a_grow_runs_are_kept(scene_setup):
    scene, t2, t2_node, seeds, logic, ids = scene_setup
    logic.grow_all(seeds, t2_node)
    seg_node = logic.segmentation_of(seeds)
    before = _mask(logic, seeds, ids[0], t2_node)
    third_ras = np.array(logic.position_ras(seeds, ids[1])) + [0.0, 0.0, 0.0]
    third = seeds.GetNthControlPointID(seeds.AddControlPoint(*third_ras, ""))

    queue = GrowQueue(logic)
    assert queue.request(seeds, t2_node, None) is None and queue.running  # the inputs are written now
    # while it grows: seed 1 is moved and re-graded, seed 2's segment painted, seed 3 deleted
    moved = np.array(logic.position_ras(seeds, ids[0])) + [1.0, 1.0, 0.0]
    seeds.SetNthControlPointPosition(0, *moved)
    logic.set_ggg(seeds, ids[0], 3)
    painted = _mask(logic, seeds, ids[1], t2_node).astype(np.uint8)
    painted[6, 2:6, 2:6] = 1
    set_segment_mask(seg_node, segment_id_for(ids[1]), painted, t2_node)
    seeds.RemoveNthControlPoint(seeds.GetControlPointIndexByID(third))

    [update] = queue.wait(TIMEOUT_S)
    assert not update.error and update.outcome.grown == []
    assert sorted(update.outcome.changed_meanwhile) == sorted([ids[0], ids[1], third])
    assert "while growing" in update.outcome.message()
    assert np.array_equal(_mask(logic, seeds, ids[0], t2_node), before)  # not the lesion of the old position
    assert logic.segmentation_of(seeds).GetSegmentation().GetSegment(segment_id_for(ids[0])).GetName() == segment_name(1, 3)
    assert np.array_equal(_mask(logic, seeds, ids[1], t2_node), painted > 0)
    assert seg_node.GetSegmentation().GetSegment(segment_id_for(third)) is None
    assert logic.moved_seeds(seeds) == [ids[0]]  # so the panel's move handler re-grows it
    again = _grow(queue, seeds, t2_node, MOVED)
    assert again.grown == [ids[0]] and logic.moved_seeds(seeds) == []
    assert logic.is_edited(seg_node, ids[1])  # the painted segment still counts as a hand edit


def test_a_grow_asked_for_while_one_runs_runs_next(scene_setup):
    scene, t2, t2_node, seeds, logic, ids = scene_setup
    queue = GrowQueue(logic)
    assert queue.request(seeds, t2_node, [ids[0]]) is None and queue.running and not queue.waiting
    assert queue.request(seeds, t2_node, [ids[1]]) is None and queue.waiting
    assert queue.request(seeds, t2_node, MOVED) is None and queue.waiting  # merged with the waiting one
    first, second = queue.wait(TIMEOUT_S)
    assert first.outcome.grown == [ids[0]]
    assert second.outcome.grown == [ids[1]]  # seed 1 grew in the first run: no longer "moved"
    assert not queue.running and not queue.waiting and logic.moved_seeds(seeds) == []
    # nothing moved: a request for moved seeds starts nothing
    done = queue.request(seeds, t2_node, MOVED)
    assert done is not None and done.finished and done.outcome.grown == [] and not queue.running


def test_a_failing_grow_says_why_and_changes_nothing(scene_setup):
    scene, t2, t2_node, seeds, logic, ids = scene_setup
    logic.grow_params.max_volume_cc = -1.0  # refused by the command, not by the panel
    queue = GrowQueue(logic)
    assert queue.request(seeds, t2_node) is None
    [update] = queue.wait(TIMEOUT_S)
    assert update.outcome is None and "max-volume-cc" in update.error
    assert logic.segmentation_of(seeds) is None
    with pytest.raises(CaseError, match="Place at least one seed"):
        queue.request(scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "empty"), t2_node)


def test_a_lesion_hidden_under_a_lower_numbered_one_is_an_empty_flagged_segment(scene_setup):
    """Within one grow the lower seed number keeps overlapping voxels, as the exported label map does."""
    scene, t2, t2_node, seeds, logic, ids = scene_setup
    twin = seeds.GetNthControlPointID(seeds.AddControlPoint(*logic.position_ras(seeds, ids[0]), ""))
    outcome = _grow(GrowQueue(logic), seeds, t2_node)
    assert outcome.grown == [*ids, twin] and "no_voxels_of_its_own" in outcome.reports[twin].flags
    assert _mask(logic, seeds, ids[0], t2_node).any() and not _mask(logic, seeds, twin, t2_node).any()
    assert "no_voxels_of_its_own" in logic.table_rows(seeds)[2].flags


def test_a_point_list_removed_while_it_grows_gets_no_segmentation(scene_setup):
    scene, t2, t2_node, seeds, logic, ids = scene_setup
    queue = GrowQueue(logic)
    assert queue.request(seeds, t2_node) is None
    scene.RemoveNode(seeds)
    [update] = queue.wait(TIMEOUT_S)
    assert not update.error and update.outcome.grown == [] and update.outcome.changed_meanwhile == ids
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0


def test_a_cancelled_grow_changes_nothing_and_drops_the_waiting_request(scene_setup):
    from ProstateLesionCADSlicer.annotate_growing import CANCELLED_MESSAGE

    scene, t2, t2_node, seeds, logic, ids = scene_setup
    queue = GrowQueue(logic)
    assert queue.request(seeds, t2_node) is None and queue.running
    assert queue.request(seeds, t2_node, [ids[1]]) is None and queue.waiting
    queue.cancel()  # the panel's Cancel
    assert not queue.waiting
    [update] = queue.wait(TIMEOUT_S)
    assert update.finished and not update.error and update.outcome is None
    assert update.message == CANCELLED_MESSAGE
    assert not queue.running and logic.segmentation_of(seeds) is None
    assert _grow(queue, seeds, t2_node).grown == ids  # the next grow runs as usual
