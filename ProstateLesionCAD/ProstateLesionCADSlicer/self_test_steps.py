"""The checks of the ProstateLesionCAD self-test, one per step of the walk-through on the sample.

load sample -> zones -> registration (fast preset, 2 starts) -> detection -> lesion nodes
(segments in their GGG colours, one ROI per lesion, the table) -> working points ->
annotate (seed, grow, move the seed, re-grow, export).

Each function runs or checks one step on MRML nodes and raises StepFailed (an
AssertionError, so unittest reports a failure, never a skip) saying what went wrong.
The module's ScriptedLoadableModuleTest calls them inside Slicer, where it also presses the
panel's preset buttons; Testing/test_self_test_steps.py calls them with the slicer-core wheel.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ProstateLesionCADLib import coordinates, ggg_palette
from ProstateLesionCADLib.formats import read_ground_truth

from . import background_process, lesion_nodes, mrml_volumes
from .annotate_logic import AnnotateLogic, segment_id_for, segment_mask
from .sample_data import sample_source

SELF_TEST_STARTS = 2  # registration starts: enough to exercise the multi-start, short on a CPU
SEED_MOVE_MM = (1.0, 1.0, 0.0)  # the "dragged" seed stays inside the sample's lesion
COLOUR_TOLERANCE = 1e-3


class StepFailed(AssertionError):
    """A step of the self-test ran and did not give what it should."""


def run_step(runner, step: str, prepare: Callable, load: Callable, timeout: float):
    """Run a background step as the panel does, wait at most `timeout` s, return `load(out_dir)`.

    A failed or cancelled step raises StepFailed; one running too long is cancelled and
    raises the runner's StepTimeout.
    """
    runner.start(step, prepare)
    update = runner.wait(timeout)
    try:
        if update.state != background_process.SUCCEEDED:
            raise StepFailed(f"The {step} step {update.state}: {update.error or update.status_text()}")
        return load(update.out_dir)
    finally:
        update.cleanup()


def registration_command(cad, work, starts: int = SELF_TEST_STARTS) -> list[str]:
    """The panel's registration command (fast preset) limited to `starts` starts."""
    return [*cad.step_command("registration", work), "--starts", str(starts)]


def check_registration(cad) -> None:
    p = cad.params
    moving = cad.moving_nodes()
    if p.registration_transform is None or not moving:
        raise StepFailed("The registration left no transform node, or there is no ADC/DWI to place.")
    wrong = [n.GetName() for n in moving if n.GetParentTransformNode() is not p.registration_transform]
    if wrong:
        raise StepFailed(f"{', '.join(wrong)} not placed under the registration transform.")


def check_zones(node) -> None:
    count = node.GetSegmentation().GetNumberOfSegments() if node is not None else 0
    if count != 3:
        raise StepFailed(f"The zones step gave {count} segments; expected prostate, central gland and peripheral zone.")


def check_lesion_nodes(cad, seg_node, table, infos) -> list:
    """Each lesion: a segment in its GGG colour and an ROI of that colour; the table lists those shown."""
    if not infos:
        raise StepFailed("The detection step found no lesion on the sample.")
    segmentation = seg_node.GetSegmentation()
    if segmentation.GetNumberOfSegments() != len(infos):
        raise StepFailed(f"{segmentation.GetNumberOfSegments()} segments for {len(infos)} lesions.")
    rois = {n.GetAttribute(lesion_nodes.SEGMENT_ID_ATTRIBUTE): n
            for n in lesion_nodes.run_nodes(cad.scene, cad.params.lesion_run_key) if n.IsA("vtkMRMLMarkupsROINode")}
    for info in infos:
        rgb = np.array(ggg_palette.ggg_class(info.ggg).rgb)
        segment = segmentation.GetSegment(info.segment_id)
        if segment is None or not np.allclose(segment.GetColor(), rgb, atol=COLOUR_TOLERANCE):
            raise StepFailed(f"Lesion {info.name}: its segment is missing or not in the colour of GGG{info.ggg}.")
        roi = rois.get(info.segment_id)
        if roi is None or not np.allclose(roi.GetDisplayNode().GetColor(), rgb, atol=COLOUR_TOLERANCE):
            raise StepFailed(f"Lesion {info.name}: its ROI is missing or not in the colour of GGG{info.ggg}.")
    if len(rois) != len(infos):
        raise StepFailed(f"{len(rois)} ROIs for {len(infos)} lesions.")
    shown = cad.apply_filter()
    if table.GetTable().GetNumberOfRows() != len(shown):
        raise StepFailed(f"The lesion table has {table.GetTable().GetNumberOfRows()} rows; {len(shown)} lesions are shown.")
    return shown


def check_filter(cad, infos, threshold: float) -> list:
    """After the threshold changed: exactly the lesions meeting the criterion and the threshold are shown and listed."""
    p = cad.params
    shown = {i.segment_id for i in cad.apply_filter()}
    expected = {i.segment_id for i in infos if lesion_nodes.is_shown(i, p.min_ggg, threshold)}
    if abs(p.score_threshold - threshold) > 1e-9 or shown != expected:
        raise StepFailed(f"At threshold {threshold:.3f} the panel shows {len(shown)} lesions; {len(expected)} "
                         f"meet {p.criterion} and the threshold.")
    rows = p.lesion_table.GetTable().GetNumberOfRows()
    if rows != len(expected):
        raise StepFailed(f"The lesion table lists {rows} lesions; {len(expected)} are shown.")
    return sorted(expected)


def model_presets(cad, package) -> dict:
    presets = cad.model_presets(package, cad.params.min_ggg)
    if presets is None:
        raise StepFailed(f"The model {package.name} has no working points for {cad.params.criterion}.")
    return presets


def sample_lesion() -> tuple[tuple[float, float, float], int]:
    """RAS centre and GGG of the sample's ground-truth lesion."""
    truth = read_ground_truth(sample_source().folder / "ground-truth.json").cases[0].lesions[0]
    return tuple(coordinates.lps_to_ras(truth.center_lps)), truth.ggg


def _grow(queue, seeds, t2_node, point_ids, timeout: float):
    """A grow as the panel runs it (annotate_growing: `prostate-cad grow` in the background); its outcome."""
    finished = queue.request(seeds, t2_node, point_ids)
    updates = [finished] if finished is not None else queue.wait(timeout)
    if len(updates) != 1 or updates[0].error:
        raise StepFailed(f"Growing failed: {updates[-1].error if updates else 'no result'}")
    return updates[0].outcome


def annotate_sample(scene, t2_node, out_dir=None, timeout: float = 600.0) -> Path:
    """Seed on the sample's lesion, grow, move the seed, re-grow (both in the background, as the panel
    grows), export; returns the ground-truth file."""
    from .annotate_growing import MOVED, GrowQueue

    logic = AnnotateLogic(scene)
    queue = GrowQueue(logic)
    ras, ggg = sample_lesion()
    seeds = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Self-test seeds")
    seeds.AddControlPoint(*ras, "")
    pid = logic.point_ids(seeds)[0]
    logic.set_ggg(seeds, pid, ggg)
    grown = _grow(queue, seeds, t2_node, None, timeout)
    if grown.grown != [pid]:
        raise StepFailed(f"Growing the seed gave: {grown.message()}")
    seg_node = logic.segmentation_of(seeds)
    first = segment_mask(seg_node, segment_id_for(pid), t2_node)
    i, j, k = np.round(mrml_volumes.ras_to_ijk(t2_node, ras)).astype(int)
    if not first[k, j, i]:
        raise StepFailed("The grown lesion does not contain its seed.")
    seeds.SetNthControlPointPosition(0, *(np.array(ras) + SEED_MOVE_MM))
    if logic.moved_seeds(seeds) != [pid]:
        raise StepFailed("Moving the seed was not noticed.")
    regrown = _grow(queue, seeds, t2_node, MOVED, timeout)
    if regrown.grown != [pid] or logic.moved_seeds(seeds):
        raise StepFailed(f"Re-growing the moved seed gave: {regrown.message()}")
    folder = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="ProstateLesionCAD-selftest-"))
    path = logic.export(seeds, t2_node, folder / "annotation")
    lesions = read_ground_truth(path).cases[0].lesions
    if [lesion.ggg for lesion in lesions] != [ggg] or not (path.parent / "lesions.nrrd").is_file():
        raise StepFailed(f"The export wrote {path} with {len(lesions)} lesion(s), not the one grown.")
    return path
