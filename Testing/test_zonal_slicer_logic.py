"""ZonalSegmentation's Logic on real MRML classes (slicer-core wheel): segments from a label map
(names, colours, terminology, voxels at the right place), PZ recompute after an edit, export
for training, and re-runs that never overwrite a node the user edited."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ProstateLesionCAD"))

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is a dev dependency")  # noqa: E402

from ProstateLesionCADSlicer import mrml_volumes  # noqa: E402
from ProstateLesionCADSlicer.zonal_logic import CG, PROSTATE, PZ, SEGMENTS, ZonalLogic  # noqa: E402

ANGLE = math.radians(12)
DIRECTION = (math.cos(ANGLE), -math.sin(ANGLE), 0, math.sin(ANGLE), math.cos(ANGLE), 0, 0, 0, 1)


def _t2_and_zones():
    shape = (10, 60, 64)  # z, y, x
    t2 = sitk.GetImageFromArray(np.random.default_rng(0).normal(300, 20, shape).astype(np.float32))
    t2.SetSpacing((0.6, 0.6, 3.0))
    t2.SetOrigin((-20.0, 10.0, -40.0))
    t2.SetDirection(DIRECTION)
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    r_prostate = ((i - 32) / 20.0) ** 2 + ((j - 30) / 16.0) ** 2 + ((k - 5) / 3.5) ** 2
    r_cg = ((i - 32) / 11.0) ** 2 + ((j - 26) / 9.0) ** 2 + ((k - 5) / 2.5) ** 2
    zones = np.where(r_cg <= 1, 1, np.where(r_prostate <= 1, 2, 0)).astype(np.uint8)
    z = sitk.GetImageFromArray(zones)
    z.CopyInformation(t2)
    return t2, z


@pytest.fixture
def scene_setup():
    scene = slicer.vtkMRMLScene()
    t2, zones = _t2_and_zones()
    t2_node = mrml_volumes.image_to_volume_node(scene, t2, "T2")
    return scene, t2_node, t2, zones


def test_segments_from_label_map(scene_setup):
    scene, t2_node, t2, zones = scene_setup
    logic = ZonalLogic(scene)
    node = logic.segmentation_from_zones(zones, t2_node)
    seg = node.GetSegmentation()
    assert [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())] == [PROSTATE, CG, PZ]
    for name, (rgb, code, _) in SEGMENTS.items():
        segment = seg.GetSegment(seg.GetSegmentIdBySegmentName(name))
        assert np.allclose(segment.GetColor(), rgb)
        assert f"SCT^{code}^" in segment.GetTerminology()
    z = sitk.GetArrayFromImage(zones)
    for name, expected in ((PROSTATE, z > 0), (CG, z == 1), (PZ, z == 2)):
        got = logic.segment_mask(node, name, t2_node)
        assert got.shape == z.shape
        assert np.array_equal(got, expected), name
    # A known voxel lands at the RAS point of its LPS position (PZ, lateral edge of the gland).
    idx = (50, 30, 5)
    assert z[idx[2], idx[1], idx[0]] == 2
    lps = np.array(t2.TransformIndexToPhysicalPoint(idx))
    ras = lps * np.array([-1, -1, 1])
    ijk = mrml_volumes.ras_to_ijk(t2_node, ras)
    assert np.allclose(ijk, idx, atol=1e-4)


def test_recompute_pz_after_an_edit(scene_setup):
    scene, t2_node, t2, zones = scene_setup
    logic = ZonalLogic(scene)
    node = logic.segmentation_from_zones(zones, t2_node)
    z = sitk.GetArrayFromImage(zones)
    # The user grows the central gland by 3 voxels to the left (edit done through the segment's labelmap).
    cg = z == 1
    grown = cg | np.roll(cg, 3, axis=2)
    from ProstateLesionCADLib import coordinates
    from ProstateLesionCADLib.lesions import masks as lesion_masks
    from ProstateLesionCADSlicer import lesion_nodes

    image = lesion_nodes.oriented_image_from_mask(lesion_masks.LesionMask((0, 0, 0), grown, "edit"),
                                                  coordinates.image_ijk_to_ras_matrix(t2))
    cg_id = node.GetSegmentation().GetSegmentIdBySegmentName(CG)
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, node, cg_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    counts = logic.recompute_pz(node, t2_node)
    pz = logic.segment_mask(node, PZ, t2_node)
    assert np.array_equal(pz, (z > 0) & ~grown)
    assert counts["pz"] == int(((z > 0) & ~grown).sum()) < int((z == 2).sum())
    assert counts["cg_outside_prostate"] == int((grown & ~(z > 0)).sum())
    # The user's own segments are untouched.
    assert np.array_equal(logic.segment_mask(node, CG, t2_node), grown)
    assert np.array_equal(logic.segment_mask(node, PROSTATE, t2_node), z > 0)
    assert node.GetSegmentation().GetNumberOfSegments() == 3


def test_rerun_keeps_an_edited_node_and_replaces_an_untouched_one(scene_setup):
    scene, t2_node, t2, zones = scene_setup
    logic = ZonalLogic(scene)
    first = logic.segmentation_from_zones(zones, t2_node, run_key="zones:A")
    second = logic.segmentation_from_zones(zones, t2_node, run_key="zones:A")
    assert not scene.IsNodePresent(first) and scene.IsNodePresent(second)
    # Edit: the user erases the PZ.
    empty = np.zeros(sitk.GetArrayFromImage(zones).shape, bool)
    from ProstateLesionCADLib import coordinates
    from ProstateLesionCADLib.lesions import masks as lesion_masks
    from ProstateLesionCADSlicer import lesion_nodes

    image = lesion_nodes.oriented_image_from_mask(lesion_masks.LesionMask((0, 0, 0), empty, "edit"),
                                                  coordinates.image_ijk_to_ras_matrix(t2))
    pz_id = second.GetSegmentation().GetSegmentIdBySegmentName(PZ)
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, second, pz_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    third = logic.segmentation_from_zones(zones, t2_node, run_key="zones:A")
    assert scene.IsNodePresent(second) and scene.IsNodePresent(third)
    assert second.GetName().endswith("(edited)")
    assert not logic.segment_mask(second, PZ, t2_node).any()  # the user's edit survives


def test_export_training_pair_round_trip(scene_setup, tmp_path):
    scene, t2_node, t2, zones = scene_setup
    logic = ZonalLogic(scene)
    node = logic.segmentation_from_zones(zones, t2_node)
    t2_path, zones_path = logic.export_training_pair(node, t2_node, tmp_path, "Case 7")
    assert t2_path.name == "Case_7-t2.nrrd"
    back = sitk.ReadImage(str(zones_path))
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(zones))
    assert np.allclose(back.GetDirection(), t2.GetDirection()) and np.allclose(back.GetOrigin(), t2.GetOrigin())
    # The pair is accepted by the trainer's reader.
    from ProstateLesionCADLib.zones.training import read_pair

    read_pair(t2_path, zones_path)


def test_bad_label_map_and_missing_t2(scene_setup, tmp_path):
    from ProstateLesionCADLib.errors import CaseError, FormatError

    scene, t2_node, t2, zones = scene_setup
    logic = ZonalLogic(scene)
    bad = sitk.Cast(zones, sitk.sitkUInt8) * 3
    with pytest.raises(FormatError, match="expected 0, 1 = CG, 2 = PZ"):
        logic.segmentation_from_zones(bad, t2_node)
    with pytest.raises(CaseError, match="Select a T2"):
        logic.write_t2(None, tmp_path)
    with pytest.raises(FormatError, match="no zones.nrrd"):
        logic.load_result(tmp_path, t2_node)
    command = logic.zones_command(t2_node, tmp_path, "cascade", "zones-demo-cascade")
    assert command[1:4] == ["-m", "ProstateLesionCADLib", "zones"] and "--backend" in command
    assert command[4] == str(tmp_path / "t2.nrrd") and (tmp_path / "t2.nrrd").is_file()
    from ProstateLesionCADLib.errors import ParameterError

    with pytest.raises(ParameterError, match="backend"):
        logic.zones_command(t2_node, tmp_path, "nnunet")


def _write_zones_output(out, zones):
    out.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(zones, str(out / "zones.nrrd"))
    return out


def test_both_panels_keep_one_zones_node_per_t2(scene_setup, tmp_path):
    """Zones run from the ZonalSegmentation panel and from the CAD panel on the same T2 replace each other."""
    from ProstateLesionCADSlicer.cad_logic import CadLogic
    from ProstateLesionCADSlicer.zonal_logic import zones_run_key

    scene, t2_node, t2, zones = scene_setup
    cad = CadLogic(scene)
    cad.params.t2, cad.params.case_id = t2_node, "P7"
    zonal = ZonalLogic(scene)
    out = _write_zones_output(tmp_path / "out", zones)

    def zones_nodes():
        return [scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
                for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]

    first, _ = zonal.load_result(out, t2_node)  # what the ZonalSegmentation module does with its output
    second = cad.load_zones_result(out)
    assert zones_nodes() == [second] and not scene.IsNodePresent(first)
    third, _ = zonal.load_result(out, t2_node)
    assert zones_nodes() == [third]
    fourth = cad.zones_from_label_image(zones)
    assert zones_nodes() == [fourth] and cad.params.zones is fourth
    assert fourth.GetAttribute("ProstateLesionCAD.RunKey") == zones_run_key(t2_node)
    # another T2 has its own zones node
    other = mrml_volumes.image_to_volume_node(scene, t2, "T2 again")
    zonal.load_result(out, other)
    assert len(zones_nodes()) == 2


def test_zones_step_arguments_and_label_map_export(scene_setup, tmp_path):
    from ProstateLesionCADLib import cli
    from ProstateLesionCADLib.zones import BACKENDS, DEMO_MODEL

    scene, t2_node, t2, zones = scene_setup
    logic = ZonalLogic(scene)
    assert logic.step_availability()["zones"][0]
    arguments = logic.zones_arguments(t2_node, tmp_path / "work")
    assert (arguments.backend, arguments.model) == (BACKENDS[0], DEMO_MODEL)
    back = sitk.ReadImage(str(arguments.t2_file))
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(t2))
    args = cli.build_parser().parse_args(logic.zones_command(t2_node, tmp_path / "work")[3:])
    assert (args.path, args.out, args.backend, args.model) == (
        str(tmp_path / "work" / "t2.nrrd"), str(tmp_path / "work" / "out"), BACKENDS[0], DEMO_MODEL)
    node = logic.segmentation_from_zones(zones, t2_node)
    labelmap = logic.export_labelmap(node, t2_node)
    assert labelmap.IsA("vtkMRMLLabelMapVolumeNode") and labelmap.GetName() == "Prostate zones label map"
    assert np.array_equal(sitk.GetArrayFromImage(mrml_volumes.volume_node_to_image(labelmap)),
                          sitk.GetArrayFromImage(zones))


def test_pz_post_processing_reaches_the_zones_command(scene_setup, tmp_path):
    """The Zonal Segmentation panel's PZ options (spin boxes whose 0 reads "off") reach `zones`."""
    from ProstateLesionCADLib import cli
    from ProstateLesionCADLib.zones import PZ_SHELL_MM
    from ProstateLesionCADSlicer.zonal_logic import (BAND_OFF_TIP, BAND_TIP, anterior_band_state, shell_from_spin_box,
                                                     spin_box_shell)

    scene, t2_node, t2, zones = scene_setup
    logic = ZonalLogic(scene)
    parse = cli.build_parser().parse_args
    args = parse(logic.zones_command(t2_node, tmp_path / "a")[3:])
    assert (float(args.pz_shell_mm), args.pz_anterior_band) == (PZ_SHELL_MM, 0.0)
    argv = logic.zones_command(t2_node, tmp_path / "b", "cascade", pz_shell_mm=shell_from_spin_box(18.0),
                               pz_anterior_band=0.5)
    args = parse(argv[3:])
    assert (args.backend, args.pz_shell_mm, args.pz_anterior_band) == ("cascade", "18.0", 0.5)
    argv = logic.zones_command(t2_node, tmp_path / "c", pz_shell_mm=shell_from_spin_box(0.0), pz_anterior_band=0.5)
    assert parse(argv[3:]).pz_shell_mm == "off" and "--pz-anterior-band" not in argv
    assert spin_box_shell(None) == 0.0 and spin_box_shell(PZ_SHELL_MM) == PZ_SHELL_MM
    assert shell_from_spin_box(spin_box_shell(7.5)) == 7.5 and shell_from_spin_box(spin_box_shell(None)) is None
    assert anterior_band_state(None) == (False, BAND_OFF_TIP) and anterior_band_state(16.0) == (True, BAND_TIP)
