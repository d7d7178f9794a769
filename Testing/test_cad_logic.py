"""The CAD panel's Logic on real MRML classes (slicer-core wheel): nodes from a detections
file, LPS -> RAS at a known point and voxel, names/colours, filtering, idempotent re-runs,
parameter save/restore through a saved and reloaded .mrml, background processes."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ProstateLesionCAD"))

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is a dev dependency")  # noqa: E402

from ProstateLesionCADLib import coordinates, ggg_palette
from ProstateLesionCADLib.lesions import masks as lesion_masks  # noqa: E402
from ProstateLesionCADLib.errors import CaseError, FormatError, ModelError  # noqa: E402
from ProstateLesionCADLib.formats import Detection, DetectionCase, DetectionSet, write_detections  # noqa: E402
from ProstateLesionCADSlicer import background_process, lesion_nodes, mrml_volumes  # noqa: E402
from ProstateLesionCADSlicer.cad_logic import CadLogic  # noqa: E402
from ProstateLesionCADSlicer.parameters import parameters  # noqa: E402

# A rotated grid (10 degrees about the S axis) with a real ProstateX-like spacing and origin.
ANGLE = math.radians(10)
DIRECTION = (math.cos(ANGLE), -math.sin(ANGLE), 0, math.sin(ANGLE), math.cos(ANGLE), 0, 0, 0, 1)


def _saved_and_reloaded(scene, path):
    """The scene written to `path` and read back into a new scene."""
    scene.SetURL(str(path))
    assert scene.Commit()
    reloaded = slicer.vtkMRMLScene()
    reloaded.SetURL(str(path))
    assert reloaded.Connect()
    return reloaded


def _t2_image() -> sitk.Image:
    img = sitk.Image([80, 80, 12], sitk.sitkFloat32)
    img.SetSpacing((0.5, 0.5, 3.0))
    img.SetOrigin((-10.0, 5.0, -60.0))
    img.SetDirection(DIRECTION)
    arr = np.random.default_rng(0).normal(100, 5, (12, 80, 80)).astype(np.float32)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def _probability(t2: sitk.Image, center_index) -> sitk.Image:
    k, j, i = np.meshgrid(np.arange(12), np.arange(80), np.arange(80), indexing="ij")
    ci, cj, ck = center_index
    r2 = ((i - ci) * 0.5) ** 2 + ((j - cj) * 0.5) ** 2 + ((k - ck) * 3.0) ** 2
    prob = sitk.GetImageFromArray(np.exp(-r2 / (2 * 2.5 ** 2)).astype(np.float32))  # sigma 2.5 mm blob
    prob.CopyInformation(t2)
    return prob


@pytest.fixture
def case_files(tmp_path):
    """A detections file with a probability map: 4 detections of GGG 3, 2, 0, 1."""
    t2 = _t2_image()
    known_index = (20, 30, 5)
    p1 = np.array(t2.TransformIndexToPhysicalPoint(known_index))
    p2 = np.array(t2.TransformIndexToPhysicalPoint((60, 50, 7)))
    p3 = np.array(t2.TransformIndexToPhysicalPoint((40, 60, 3)))
    p4 = np.array(t2.TransformIndexToPhysicalPoint((60, 20, 9)))
    half = np.array([4.0, 4.0, 4.5])
    dets = [Detection(7, 3, 0.81, tuple(p1), (tuple(p1 - half), tuple(p1 + half))),
            Detection(3, 2, 0.41, tuple(p2), (tuple(p2 - half), tuple(p2 + half))),
            Detection(5, 0, 0.30, tuple(p3), (tuple(p3 - half), tuple(p3 + half))),
            Detection(9, 1, 0.20, tuple(p4), None)]
    case_dir = tmp_path / "run" / "P1"
    case_dir.mkdir(parents=True)
    sitk.WriteImage(_probability(t2, known_index), str(case_dir / "lesion-probability.nrrd"))
    path = tmp_path / "run" / "detections.json"
    write_detections(DetectionSet([DetectionCase("P1", dets, case_dir / "lesion-probability.nrrd")],
                                  {"name": "tiny-demo", "version": "1"}), path)
    zones = sitk.Image(t2.GetSize(), sitk.sitkUInt8)
    zones.CopyInformation(t2)
    zarr = sitk.GetArrayFromImage(zones)
    zarr[:, :, :40] = 2  # PZ on low i, CG on high i
    zarr[:, :, 40:] = 1
    zones_img = sitk.GetImageFromArray(zarr)
    zones_img.CopyInformation(t2)
    return {"t2": t2, "path": path, "known_index": known_index, "p1": p1, "zones": zones_img}


@pytest.fixture
def scene_logic(case_files):
    scene = slicer.vtkMRMLScene()
    logic = CadLogic(scene)
    logic.params.t2 = mrml_volumes.image_to_volume_node(scene, case_files["t2"], "P1 T2")
    logic.params.case_id = "P1"
    return scene, logic


def _nodes(scene, cls):
    return [scene.GetNthNodeByClass(i, cls) for i in range(scene.GetNumberOfNodesByClass(cls))]


def test_lps_to_ras_at_a_known_point_and_volume_geometry_round_trip(case_files):
    # ProstateX-0000's biopsied lesion (data/README.md) in Slicer's RAS
    assert coordinates.lps_to_ras((25.7457, 31.8707, -38.511)) == (-25.7457, -31.8707, -38.511)
    assert coordinates.ras_to_lps(coordinates.lps_to_ras((1.0, 2.0, 3.0))) == (1.0, 2.0, 3.0)
    scene = slicer.vtkMRMLScene()
    t2 = case_files["t2"]
    node = mrml_volumes.image_to_volume_node(scene, t2, "T2")
    # a voxel's centre in LPS (ITK) lands at the same voxel through Slicer's RAS -> IJK
    lps = t2.TransformIndexToPhysicalPoint((20, 30, 5))
    assert np.allclose(mrml_volumes.ras_to_ijk(node, coordinates.lps_to_ras(lps)), (20, 30, 5), atol=1e-6)
    back = mrml_volumes.volume_node_to_image(node)
    assert np.allclose(back.GetOrigin(), t2.GetOrigin()) and np.allclose(back.GetDirection(), t2.GetDirection())
    assert np.allclose(back.GetSpacing(), t2.GetSpacing())
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(t2))


def test_nodes_from_a_detections_file(case_files, scene_logic):
    scene, logic = scene_logic
    logic.params.min_ggg, logic.params.score_threshold = 0, 0.0  # show everything first
    seg, table, infos = logic.load_detections(case_files["path"], zones=case_files["zones"])
    # ranked by score, named for the radiologist, coloured by GGG
    assert [i.name for i in infos] == ["Lesion 1 · GGG3+ · 0.81", "Lesion 2 · GGG2 · 0.41",
                                       "Lesion 3 · GGG0 · 0.30", "Lesion 4 · GGG1 · 0.20"]
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 4
    for info in infos:
        segment = segmentation.GetSegment(info.segment_id)
        assert segment.GetName() == info.name
        assert np.allclose(segment.GetColor(), ggg_palette.ggg_class(info.ggg).rgb)
        assert ("^108369006^Neoplasm" if info.ggg >= 1 else "^52988006^Lesion") in lesion_nodes.segment_tag(segment, "TerminologyEntry")
    # the known lesion: its ROI is centred at the RAS point of the LPS box centre, i.e. the known voxel
    rois = {r.GetName(): r for r in _nodes(scene, "vtkMRMLMarkupsROINode")}
    assert set(rois) == {i.name for i in infos}
    center = [0.0] * 3
    rois[infos[0].name].GetCenter(center)
    assert np.allclose(center, coordinates.lps_to_ras(case_files["p1"]), atol=1e-4)
    assert np.allclose(mrml_volumes.ras_to_ijk(logic.params.t2, center), case_files["known_index"], atol=1e-4)
    assert np.allclose(rois[infos[0].name].GetSize(), (8.0, 8.0, 9.0))
    assert np.allclose(rois[infos[1].name].GetDisplayNode().GetSelectedColor(), ggg_palette.ggg_class(2).rgb)
    # lesion 1 comes from the probability map (p >= 0.5: the 2.5 mm-sigma blob's 2.94 mm radius sphere)
    assert infos[0].mask_source == "probability>=0.5"
    labelmap = slicer.vtkOrientedImageData()
    seg.GetBinaryLabelmapRepresentation(infos[0].segment_id, labelmap)
    from vtk.util import numpy_support
    ext = labelmap.GetExtent()
    arr = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(
        ext[5] - ext[4] + 1, ext[3] - ext[2] + 1, ext[1] - ext[0] + 1)
    k, j, i = np.nonzero(arr)
    centroid = (i.mean() + ext[0], j.mean() + ext[2], k.mean() + ext[4])
    assert np.allclose(centroid, case_files["known_index"], atol=0.01)
    expected_cm3 = 4 / 3 * math.pi * (2.5 * math.sqrt(2 * math.log(2))) ** 3 / 1000
    assert infos[0].volume_cm3 == pytest.approx(expected_cm3, rel=0.25)
    # no map response -> ellipsoid inscribed in the box; no box -> 10 mm cube's ellipsoid
    assert infos[1].mask_source == "ellipsoid" and infos[3].mask_source == "ellipsoid"
    assert infos[1].volume_cm3 == pytest.approx(4 / 3 * math.pi * 4 * 4 * 4.5 / 1000, rel=0.25)
    assert infos[3].volume_cm3 == pytest.approx(4 / 3 * math.pi * 125 / 1000, rel=0.35)
    # zones from the label map: PZ for i < 40, CG beyond
    assert [i.zone for i in infos] == ["PZ", "CG", "CG", "CG"]
    # the table lists GGG, score, volume, zone and centre RAS
    t = table.GetTable()
    assert t.GetNumberOfRows() == 4
    assert [t.GetColumnName(c) for c in range(t.GetNumberOfColumns())] == list(lesion_nodes.TABLE_COLUMNS)
    assert t.GetColumnByName("GGG").GetValue(0) == 3 and t.GetColumnByName("Zone").GetValue(0) == "PZ"
    assert np.allclose(logic.lesion_center(0), coordinates.lps_to_ras(case_files["p1"]), atol=0.01)
    assert logic.lesion_center(10) is None


def test_criterion_and_threshold_change_visibility_only(case_files, scene_logic):
    scene, logic = scene_logic
    seg, table, infos = logic.load_detections(case_files["path"])
    n_nodes = scene.GetNumberOfNodes()
    segment_ids = [i.segment_id for i in infos]

    def visible():
        display = seg.GetDisplayNode()
        shown = [display.GetSegmentVisibility(s) for s in segment_ids]
        roi_shown = {r.GetName(): bool(r.GetDisplayNode().GetVisibility()) for r in _nodes(scene, "vtkMRMLMarkupsROINode")}
        assert shown == [roi_shown[i.name] for i in infos]
        assert table.GetTable().GetNumberOfRows() == sum(shown)
        return shown

    assert visible() == [True, False, False, False]  # defaults: GGG>=2 at 0.5
    logic.apply_filter(min_ggg=2, threshold=0.4)
    assert visible() == [True, True, False, False]
    logic.apply_filter(min_ggg=1, threshold=0.1)
    assert visible() == [True, True, False, True]  # GGG0 is never a GGG>=1 finding
    logic.apply_filter(min_ggg=3, threshold=0.1)
    assert visible() == [True, False, False, False]
    assert scene.GetNumberOfNodes() == n_nodes  # nothing re-run, nothing added
    assert seg.GetSegmentation().GetNumberOfSegments() == 4


def test_rerun_replaces_its_own_nodes_and_never_the_users(case_files, scene_logic):
    scene, logic = scene_logic
    user_seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my own segmentation")
    user_roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "my ROI")
    logic.load_detections(case_files["path"])
    counts = {c: scene.GetNumberOfNodesByClass(c) for c in
              ("vtkMRMLSegmentationNode", "vtkMRMLMarkupsROINode", "vtkMRMLTableNode")}
    total = scene.GetNumberOfNodes()
    seg2, _, _ = logic.load_detections(case_files["path"])
    assert {c: scene.GetNumberOfNodesByClass(c) for c in counts} == counts
    assert scene.GetNumberOfNodes() == total  # display nodes of the old run go too
    assert scene.GetNodeByID(user_seg.GetID()) is user_seg and scene.GetNodeByID(user_roi.GetID()) is user_roi
    # the user moves one ROI of the run: the next run keeps it (renamed) and makes a fresh one
    moved = next(r for r in _nodes(scene, "vtkMRMLMarkupsROINode") if r.GetName().startswith("Lesion 2"))
    moved.SetCenter(1.0, 2.0, 3.0)
    logic.load_detections(case_files["path"])
    names = [r.GetName() for r in _nodes(scene, "vtkMRMLMarkupsROINode")]
    assert "Lesion 2 · GGG2 · 0.41 (edited)" in names and "Lesion 2 · GGG2 · 0.41" in names
    assert scene.GetNumberOfNodesByClass("vtkMRMLMarkupsROINode") == counts["vtkMRMLMarkupsROINode"] + 1
    assert moved.GetAttribute(lesion_nodes.RUN_KEY_ATTRIBUTE) is None


def test_parameters_survive_a_saved_and_reloaded_scene(tmp_path, case_files, scene_logic):
    scene, logic = scene_logic
    p = logic.params
    adc = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "P1 ADC")
    dce = [scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"P1 DCE {i}") for i in range(3)]
    p.adc, p.dce = adc, dce
    p.model, p.device, p.min_ggg, p.score_threshold = "tiny-demo", "cpu", 3, 0.37
    seg, table, _ = logic.load_detections(case_files["path"])
    # as Slicer's "Save" does: data nodes write their files, the .mrml references them
    for node, storage_class, name in ((seg, "vtkMRMLSegmentationStorageNode", "lesions.seg.nrrd"),
                                      (table, "vtkMRMLTableStorageNode", "lesions.tsv")):
        storage = scene.AddNewNodeByClass(storage_class)
        storage.SetFileName(str(tmp_path / name))
        assert storage.WriteData(node)
        node.SetAndObserveStorageNodeID(storage.GetID())
    reloaded = _saved_and_reloaded(scene, tmp_path / "scene.mrml")
    q = parameters(reloaded, create=False)
    assert q is not None and reloaded.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1
    assert (q.model, q.device, q.min_ggg, q.score_threshold, q.case_id) == ("tiny-demo", "cpu", 3, 0.37, "P1")
    assert q.criterion == "GGG>=3" and q.detections_file == str(case_files["path"])
    assert q.t2.GetName() == "P1 T2" and q.adc.GetName() == "P1 ADC" and q.dwi_low is None
    assert [n.GetName() for n in q.dce] == ["P1 DCE 0", "P1 DCE 1", "P1 DCE 2"]
    assert q.lesions.GetName() == "Lesions · P1 · tiny-demo" and q.lesion_table.IsA("vtkMRMLTableNode")
    # the reloaded scene still filters (lesion facts live on the segments)
    shown = CadLogic(reloaded).apply_filter(min_ggg=2, threshold=0.4)
    assert [i.name for i in shown] == ["Lesion 1 · GGG3+ · 0.81", "Lesion 2 · GGG2 · 0.41"]
    # one parameter node, even when asked again
    assert parameters(reloaded).node is q.node


def test_export_case_writes_the_acquisitions_and_detection_gets_what_the_views_show(tmp_path, case_files,
                                                                                    scene_logic):
    scene, logic = scene_logic
    with pytest.raises(CaseError, match="T2"):
        CadLogic(slicer.vtkMRMLScene()).export_case(tmp_path / "none")
    adc = sitk.Image([40, 40, 10], sitk.sitkFloat32)
    adc.SetOrigin((-10.0, 5.0, -60.0))
    arr = sitk.GetArrayFromImage(adc)
    arr[5, 20, 20] = 1000.0
    adc_img = sitk.GetImageFromArray(arr)
    adc_img.CopyInformation(adc)
    p = logic.params
    p.adc = mrml_volumes.image_to_volume_node(scene, adc_img, "ADC")
    dwi = mrml_volumes.image_to_volume_node(scene, adc_img, "DWI b1400")
    p.dwi_high = dwi
    # the user shifts ADC by 5 mm to the patient's right (+R) with a transform node
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "manual")
    matrix = slicer.util.vtkMatrixFromArray(np.array([[1, 0, 0, 5.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    transform.SetMatrixTransformToParent(matrix)
    p.adc.SetAndObserveTransformNodeID(transform.GetID())
    logic.zones_from_label_image(case_files["zones"])
    # DCE as a sequence whose index is the acquisition time in seconds
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "DCE")
    for t, value in ((12.0, 1.0), (16.2, 2.0), (20.4, 3.0)):
        frame = sitk.Image(adc) + value  # on the ADC's grid: a DCE must overlap the T2
        sequence.SetDataNodeAtValue(mrml_volumes.image_to_volume_node(scene, frame, f"t{t}"), f"{t}")
    p.dce = [sequence]
    case_json = logic.export_case(tmp_path / "case")
    data = json.loads(case_json.read_text())
    assert data["format"] == "prostate-cad-case/1" and data["case_id"] == "P1"
    assert data["DWI"] == {"1400": "dwi-b1400.nrrd"} and data["zones"] == "zones.nrrd"
    # read back by the library's own loader, exactly what `prostate-cad detect` will see
    from ProstateLesionCADLib.study.loading import load_case
    from ProstateLesionCADLib.registration.register import apply_transform, read_transform

    case = load_case(case_json)
    assert np.allclose(case.t2.GetDirection(), DIRECTION) and np.allclose(case.t2.GetOrigin(), (-10.0, 5.0, -60.0))
    assert np.array_equal(sitk.GetArrayFromImage(case.t2), sitk.GetArrayFromImage(case_files["t2"]))
    # ADC and DWI as acquired: their own voxels on their own grid, whatever transform they sit under
    for image in (case.adc, case.dwi[1400.0]):
        assert np.array_equal(sitk.GetArrayFromImage(image), arr)
        assert np.allclose(image.GetOrigin(), adc_img.GetOrigin()) and np.allclose(image.GetSpacing(), adc_img.GetSpacing())
        assert np.allclose(image.GetDirection(), adc_img.GetDirection())
    assert np.array_equal(sitk.GetArrayFromImage(case.zones), sitk.GetArrayFromImage(case_files["zones"]))
    # detection applies one transform to ADC and DWI: different ones are refused in one sentence
    p.model = "tiny-demo"
    with pytest.raises(CaseError, match="different transforms"):
        logic.step_command("detection", tmp_path / "det")
    # under the same transform, the file detection gets places ADC where the views show it
    dwi.SetAndObserveTransformNodeID(transform.GetID())
    transform_file = logic.write_registration(tmp_path / "registration.h5")
    moved = sitk.GetArrayFromImage(apply_transform(case.adc, read_transform(transform_file, case.t2)))
    assert np.unravel_index(np.argmax(moved), moved.shape) == (5, 20, 15)  # +5 mm R = -5 voxels in L
    # a new registration starts from the acquisition, not from the current transform
    argv = logic.step_command("registration", tmp_path / "reg")
    raw = load_case(tmp_path / "reg" / "case" / "case.json").adc
    assert np.unravel_index(np.argmax(sitk.GetArrayFromImage(raw)), moved.shape) == (5, 20, 20)
    assert argv[3] == "register" and argv[4] == str(tmp_path / "reg" / "case" / "case.json")
    assert [float(sitk.GetArrayFromImage(img).mean()) for img in case.dce] == [1.0, 2.0, 3.0]
    assert case.dce_times == pytest.approx([0.0, 4.2, 8.4])
    assert not list(tmp_path.glob(".case-work*"))


def _moving_image(size=(40, 32, 10), spacing=(1.6, 1.6, 3.0), origin=(-20.0, -5.0, -62.0), value=1000.0):
    """An ADC/DWI-like volume on its own grid (coarser than T2), with one bright voxel."""
    arr = np.zeros(size[::-1], np.float32)
    arr[5, 16, 20] = value
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def test_detection_argv_carries_the_transform_file_and_the_original_adc_dwi(tmp_path, case_files, scene_logic):
    """The (possibly corrected) registration reaches `detect --transform FILE`; ADC/DWI are exported
    untouched, so the library interpolates them once."""
    from ProstateLesionCADLib import cli
    from ProstateLesionCADLib.study.loading import load_case

    scene, logic = scene_logic
    p = logic.params
    adc, dwi = _moving_image(), _moving_image(value=500.0)
    p.adc = mrml_volumes.image_to_volume_node(scene, adc, "ADC")
    p.dwi_high = mrml_volumes.image_to_volume_node(scene, dwi, "DWI b800")
    reg_out = tmp_path / "reg-out"
    reg_out.mkdir()
    sitk.WriteTransform(sitk.TranslationTransform(3, (2.0, 0.0, 0.0)), str(reg_out / "transform.h5"))
    logic.load_registration_result(reg_out)
    logic.zones_from_label_image(case_files["zones"])
    p.model, p.device = "tiny-demo", "cuda"
    work = tmp_path / "work"
    work.mkdir()
    argv = logic.step_command("detection", work, python="py")
    transform_file = work / "registration.h5"
    assert argv[argv.index("--transform") + 1] == str(transform_file) and transform_file.is_file()
    assert "--no-register" not in argv and argv[argv.index("--device") + 1] == "cuda"
    # the file is the registration as the views apply it: T2 point -> ADC point, +2 mm along L
    assert np.allclose(sitk.ReadTransform(str(transform_file)).TransformPoint((0.0, 0.0, 0.0)), (2.0, 0.0, 0.0))
    # the exported case holds the original arrays on their own grids, not resampled onto T2
    case = load_case(argv[4])
    for exported, original in ((case.adc, adc), (case.dwi[800.0], dwi)):
        assert np.array_equal(sitk.GetArrayFromImage(exported), sitk.GetArrayFromImage(original))
        assert exported.GetSize() == original.GetSize() and np.allclose(exported.GetSpacing(), original.GetSpacing())
        assert np.allclose(exported.GetOrigin(), original.GetOrigin())
    # and the real command line accepts it
    args = cli.build_parser().parse_args(argv[3:])
    assert (args.transform, args.zones, args.device, args.no_register) == (
        str(transform_file), str(work / "case" / "zones.nrrd"), "cuda", False)


def test_registration_corrected_by_an_outer_transform_is_written_as_one(tmp_path, scene_logic):
    """The user corrects the registration by placing its node under a linear transform: detection gets both."""
    scene, logic = scene_logic
    p = logic.params
    p.adc = mrml_volumes.image_to_volume_node(scene, _moving_image(), "ADC")
    reg_out = tmp_path / "reg-out"
    reg_out.mkdir()
    sitk.WriteTransform(sitk.TranslationTransform(3, (2.0, 0.0, 0.0)), str(reg_out / "transform.h5"))
    node = logic.load_registration_result(reg_out)
    outer = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "correction")
    outer.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(
        np.array([[1, 0, 0, 5.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])))  # 5 mm to the right (+R)
    node.SetAndObserveTransformNodeID(outer.GetID())
    n_nodes = scene.GetNumberOfNodes()
    path = logic.write_registration(tmp_path / "registration.h5")
    # T2 -> ADC: 2 mm (registration) + 5 mm (correction) along L
    assert np.allclose(sitk.ReadTransform(str(path)).TransformPoint((0.0, 0.0, 0.0)), (7.0, 0.0, 0.0), atol=1e-6)
    assert scene.GetNumberOfNodes() == n_nodes  # no helper node left behind
    # a deformable registration under a further transform cannot be written as one file: say so
    grid = sitk.Image([8, 8, 8], sitk.sitkFloat32)
    grid.SetOrigin((-40.0, -40.0, -80.0))
    grid.SetSpacing((10.0, 10.0, 10.0))
    bspline = sitk.BSplineTransformInitializer(grid, [3, 3, 3])
    bspline.SetParameters([0.5] * len(bspline.GetParameters()))
    sitk.WriteTransform(bspline, str(reg_out / "transform.h5"))
    logic.load_registration_result(reg_out)
    with pytest.raises(CaseError, match="not linear"):
        logic.write_registration(tmp_path / "deformable.h5")
    node.SetAndObserveTransformNodeID(None)
    assert logic.write_registration(tmp_path / "deformable.h5").is_file()
    # no ADC/DWI under a transform: no file
    logic.reset_registration()
    assert logic.write_registration(tmp_path / "none.h5") is None


def test_registration_result_and_reset(tmp_path, case_files, scene_logic):
    scene, logic = scene_logic
    p = logic.params
    p.adc = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ADC")
    out = tmp_path / "reg"
    out.mkdir()
    sitk.WriteTransform(sitk.TranslationTransform(3, (2.0, 0.0, 0.0)), str(out / "transform.h5"))
    node = logic.load_registration_result(out)
    assert p.adc.GetParentTransformNode() is node and p.registration_transform is node
    from_parent = node.GetTransformFromParent()
    # the file's resampling transform (T2 -> ADC, +2 mm along L in LPS) is the node's
    # "from parent" transform in RAS: -2 mm along R
    assert np.allclose(from_parent.TransformPoint((0.0, 0.0, 0.0)), (-2.0, 0.0, 0.0), atol=1e-6)
    with pytest.raises(FormatError, match="transform"):
        logic.load_registration_result(tmp_path)
    logic.reset_registration()
    assert p.adc.GetParentTransformNode() is None and p.registration_transform is None


def test_steps_are_offered_only_when_the_library_has_them(scene_logic):
    _, logic = scene_logic
    assert logic.capabilities["install"].words == ("models", "install")
    availability = logic.step_availability()
    assert list(availability) == ["registration", "zones", "detection", "dicom-seg"]  # the DICOM export too
    for step, (offered, tip) in availability.items():
        assert offered and logic.capabilities[step].command in tip
    logic.capabilities = {}
    for step, (offered, tip) in logic.step_availability().items():
        assert not offered and f"offers no {step} step" in tip


def test_presets_come_from_the_model_package(tmp_path):
    from ProstateLesionCADLib.models.package import ModelPackage

    pkg = ModelPackage(tmp_path, {"thresholds": {"GGG>=2": {"max_sensitivity": 0.12, "balanced": 0.4}}})
    assert CadLogic.model_presets(pkg, 2) == {"max_sensitivity": 0.12, "balanced": 0.4}
    assert CadLogic.model_presets(pkg, 3) is None and CadLogic.model_presets(None, 2) is None


SCRIPT = """
import sys, time
for i in range(1, 4):
    print(f"PROGRESS {i * 25}.0 step {i}", flush=True)
    time.sleep(0.05)
if sys.argv[1] == "fail":
    print("error: t2.nrrd has no slices.", file=sys.stderr, flush=True)
    sys.exit(2)
if sys.argv[1] == "hang":
    time.sleep(60)
print("PROGRESS 100.0 done", flush=True)
"""


def test_background_process_progress_success_failure_and_cancel(tmp_path, case_files, scene_logic):
    scene, logic = scene_logic
    argv = background_process.cli_command("detect", ["case.json", "--out", "x"], python="/py")
    assert argv == ["/py", "-m", "ProstateLesionCADLib", "detect", "case.json", "--out", "x"]
    ok = background_process.BackgroundProcess([sys.executable, "-c", SCRIPT, "ok"], work_dir=tmp_path / "ok")
    (tmp_path / "ok").mkdir()
    ok.start()
    result = ok.wait(30)
    assert result.state == background_process.SUCCEEDED and result.percent == 100.0 and result.message == "done"
    assert [line for line in ok.log if line.startswith("PROGRESS")][:3] == [f"PROGRESS {i * 25}.0 step {i}" for i in (1, 2, 3)]
    ok.cleanup()
    assert not (tmp_path / "ok").exists()
    bad = background_process.BackgroundProcess([sys.executable, "-c", SCRIPT, "fail"])
    bad.start()
    result = bad.wait(30)
    assert result.state == background_process.FAILED and result.error == "t2.nrrd has no slices."
    assert result.percent == 75.0
    bad.cleanup()
    before = scene.GetNumberOfNodes()
    hang = background_process.BackgroundProcess([sys.executable, "-c", SCRIPT, "hang"])
    hang.start()
    import time
    deadline = time.time() + 30
    while (hang.poll().percent or 0) < 75.0 and time.time() < deadline:
        time.sleep(0.02)
    hang.cancel()
    assert hang.wait(30).state == background_process.CANCELLED
    hang.cleanup()
    assert scene.GetNumberOfNodes() == before
    # the real CLI through the same path: a user error comes back as one sentence
    real = background_process.BackgroundProcess(
        background_process.cli_command("models", ["install", str(tmp_path / "missing.zip")], sys.executable),
        extra_python_path=background_process.library_search_path())
    real.start()
    result = real.wait(60)
    assert result.state == background_process.FAILED and "missing.zip: no such file or folder" in result.error
    real.cleanup()


def test_lesion_mask_rules(case_files):
    t2 = case_files["t2"]
    det = Detection(1, 2, 0.5, tuple(case_files["p1"]), None)
    ellipsoid = lesion_masks.detection_mask(det, t2)
    assert ellipsoid.source == "ellipsoid"
    weak = sitk.GetArrayFromImage(_probability(t2, case_files["known_index"])) * 0.4  # peak 0.4 < 0.5
    half_max = lesion_masks.detection_mask(det, t2, weak)
    assert half_max.source == "half-maximum" and 0 < half_max.voxels < ellipsoid.voxels
    far = Detection(2, 2, 0.5, (500.0, 500.0, 500.0), None)
    assert lesion_masks.detection_mask(far, t2) is None
    grid = lesion_masks.reference_grid([det])
    assert lesion_masks.detection_mask(det, grid).voxels > 0


def test_load_study_fills_the_roles_and_the_real_lesion_lands_at_its_voxel(tmp_path):
    """The bundled ProstateX-0000 through the library's loader into MRML nodes."""
    from ProstateLesionCADLib.resources import sample_case_dir

    scene = slicer.vtkMRMLScene()
    logic = CadLogic(scene)
    created = logic.load_study(sample_case_dir())
    p = logic.params
    assert p.case_id == "ProstateX-0000" and set(created) == {"T2", "ADC", "DWI_LOW", "DWI_HIGH"}
    assert (p.dwi_low.GetAttribute("ProstateLesionCAD.BValue"), p.dwi_high.GetAttribute("ProstateLesionCAD.BValue")) \
        == ("400", "800")  # measured b400/b800 chosen over b50 and the computed b1000
    assert p.t2.GetImageData().GetDimensions() == (384, 384, 19)
    # the biopsied lesion (data/README.md), LPS (25.7457, 31.8707, -38.511): same voxel via RAS in MRML
    lesion_lps = (25.7457, 31.8707, -38.511)
    t2_image = sitk.ReadImage(str(sample_case_dir() / "t2.nrrd"))
    expected = t2_image.TransformPhysicalPointToContinuousIndex(lesion_lps)
    assert np.allclose(mrml_volumes.ras_to_ijk(p.t2, coordinates.lps_to_ras(lesion_lps)), expected, atol=1e-4)
    assert np.allclose(expected, (166.80, 223.92, 8.50), atol=0.01)
    # a detection there becomes an ROI centred on that voxel
    path = tmp_path / "detections.json"
    box = (tuple(v - 5 for v in lesion_lps), tuple(v + 5 for v in lesion_lps))
    write_detections(DetectionSet([DetectionCase("ProstateX-0000", [Detection(1, 3, 0.9, lesion_lps, box)])]), path)
    _, _, infos = logic.load_detections(path)
    roi = _nodes(scene, "vtkMRMLMarkupsROINode")[0]
    center = [0.0] * 3
    roi.GetCenter(center)
    assert np.allclose(mrml_volumes.ras_to_ijk(p.t2, center), expected, atol=1e-4)
    assert infos[0].name == "Lesion 1 · GGG3+ · 0.90"


def test_offscreen_slice_view_shows_the_lesion_in_its_ggg_colour(tmp_path):
    """Render the real MRML scene (Slicer's slice logic + displayable managers) and look at the pixels."""
    from ProstateLesionCADLib.resources import sample_case_dir
    from ProstateLesionCADSlicer import slice_rendering

    scene = slicer.vtkMRMLScene()
    app, _keep = slice_rendering.prepare_scene(scene)
    logic = CadLogic(scene)
    logic.load_study(sample_case_dir())
    lesion_lps = (25.7457, 31.8707, -38.511)
    path = tmp_path / "detections.json"
    write_detections(DetectionSet([DetectionCase("ProstateX-0000", [Detection(1, 2, 0.6, lesion_lps, None)])]), path)
    logic.load_detections(path)
    logic.apply_filter(2, 0.5)
    center = coordinates.lps_to_ras(lesion_lps)
    rgb, ras_to_xy = slice_rendering.render_axial(scene, app, logic.params.t2, center, tmp_path / "view.png",
                                                  size=(300, 300), field_of_view_mm=100.0)
    assert (tmp_path / "view.png").is_file() and rgb.shape == (300, 300, 3)
    row, col = slice_rendering.pixel_of(ras_to_xy, center, 300)
    assert abs(row - 150) <= 1 and abs(col - 150) <= 1  # centred on the lesion (half-pixel convention)
    orange = np.array(ggg_palette.ggg_class(2).rgb255, float)
    patch = rgb[row - 3:row + 4, col - 3:col + 4].reshape(-1, 3).astype(float)
    grey = lambda p: np.abs(p[:, 0] - p[:, 2]).mean()  # noqa: E731
    assert grey(patch) > 60 and np.corrcoef(patch.mean(axis=0), orange)[0, 1] > 0.9  # tinted GGG2 orange
    far = rgb[10:40, 10:40].reshape(-1, 3).astype(float)
    assert grey(far) < 3 and far.mean() > 5  # T2 grey elsewhere, not black
    # hidden by the criterion -> the tint disappears (visibility only)
    logic.apply_filter(3, 0.5)
    rgb2, _ = slice_rendering.render_axial(scene, app, logic.params.t2, center, None, size=(300, 300),
                                           field_of_view_mm=100.0)
    assert grey(rgb2[row - 3:row + 4, col - 3:col + 4].reshape(-1, 3).astype(float)) < 3


def test_step_commands_follow_what_the_library_accepts(tmp_path, case_files, scene_logic):
    from dataclasses import replace

    from ProstateLesionCADLib.capabilities import Option
    from ProstateLesionCADLib.errors import ParameterError

    scene, logic = scene_logic
    p = logic.params
    with pytest.raises(ModelError, match="Select a detection model"):
        logic.step_command("detection", tmp_path / "d0")
    p.model, p.device = "tiny-demo", "cpu"
    logic.zones_from_label_image(case_files["zones"])
    argv = logic.step_command("detection", tmp_path / "d1", python="py")
    assert argv[:4] == ["py", "-m", "ProstateLesionCADLib", "detect"]
    assert argv[argv.index("--model") + 1] == "tiny-demo" and argv[argv.index("--device") + 1] == "cpu"
    assert argv[argv.index("--zones") + 1] == str(tmp_path / "d1" / "case" / "zones.nrrd")
    assert "--no-register" not in argv and "--transform" not in argv  # no transform node: the detector registers itself
    # a registration node with ADC/DWI taken out of it: the user chose them as acquired
    p.registration_transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    assert "--no-register" in logic.step_command("detection", tmp_path / "d2")
    assert logic.step_command("registration", tmp_path / "r1")[-2:] == ["--preset", "fast"]
    zones = logic.step_command("zones", tmp_path / "z", python="py")
    assert zones[:5] == ["py", "-m", "ProstateLesionCADLib", "zones", str(tmp_path / "z" / "t2.nrrd")]
    # device names as the command line spells them; a scene that says "gpu" means cuda
    p.device = "gpu"
    assert p.device == "cuda" and p.node.GetParameter("Device") == "cuda"
    p.node.SetParameter("Device", "GPU")
    assert p.device == "cuda"
    p.device = "tpu"
    with pytest.raises(ParameterError, match="device"):
        logic.step_command("detection", tmp_path / "d3")
    p.device = "cpu"
    # a library whose register has only the paper preset, whose detect takes no --device / --zones
    steps = logic.capabilities
    paper_only = replace(steps["registration"], options=(Option("--out"), Option("--preset", ("paper",))))
    bare_detect = replace(steps["detection"], options=tuple(o for o in steps["detection"].options
                                                            if o.flag not in ("--device", "--zones")))
    logic.capabilities = {**steps, "registration": paper_only, "detection": bare_detect}
    assert "--preset" not in logic.step_command("registration", tmp_path / "r2")
    argv = logic.step_command("detection", tmp_path / "d4")
    assert "--device" not in argv and "--zones" not in argv
    assert logic.install_command("pkg.zip", "ab" * 32, python="py") == [
        "py", "-m", "ProstateLesionCADLib", "models", "install", "pkg.zip", "--sha256", "ab" * 32]


def test_model_selector_lists_every_package_detect_can_run(tmp_path, monkeypatch):
    from ProstateLesionCADLib.models.package import write_model_card
    from ProstateLesionCADLib.resources import bundled_models_dir

    monkeypatch.setenv("PROSTATE_CAD_MODELS", str(tmp_path / "models"))
    for name, task in (("my-retina", "detector"), ("my-focalnet", "focalnet"), ("my-zones", "zones")):
        root = tmp_path / "models" / name
        root.mkdir(parents=True)
        (root / "w.bin").write_bytes(name.encode())
        write_model_card(root, {"name": name, "version": "1", "task": task, "intended_use": "test"}, ["w.bin"])
    names = [p.name for p in CadLogic.detector_models()]
    assert {"my-retina", "my-focalnet"} <= set(names) and "my-zones" not in names
    # each package once, bundled ones first, in folder order (the list the model selector shows)
    cards = [json.loads(c.read_text()) for c in sorted(bundled_models_dir().glob("*/model.json"))]
    bundled = [c["name"] for c in cards if c.get("task") in ("detector", "focalnet")]
    assert names == [*bundled, "my-focalnet", "my-retina"]


def test_panel_options_reach_the_commands_and_survive_a_saved_scene(tmp_path, case_files, scene_logic):
    """"Write every candidate" and the PZ post-processing, as the panel stores them in its parameter node:
    they reach the zones and detect command lines (read back by the real parser), `--all` only for a
    FocalNet model, and a saved and reloaded scene restores them."""
    from ProstateLesionCADLib import cli
    from ProstateLesionCADLib.models.package import find_model
    from ProstateLesionCADLib.zones import ANTERIOR_BAND, PZ_SHELL_MM
    from ProstateLesionCADSlicer.cad_logic import ALL_CANDIDATES_TIP

    scene, logic = scene_logic
    p = logic.params
    parse = cli.build_parser().parse_args
    # a new scene: the command line's defaults, the box unticked
    assert (p.all_candidates, p.pz_shell_mm, p.pz_anterior_band) == (False, PZ_SHELL_MM, ANTERIOR_BAND)
    p.pz_shell_mm, p.pz_anterior_band = 12.0, 0.4
    args = parse(logic.step_command("zones", tmp_path / "z1")[3:])
    assert (args.pz_shell_mm, args.pz_anterior_band) == ("12.0", 0.4)
    p.pz_shell_mm = None  # "off"
    argv = logic.step_command("zones", tmp_path / "z2")
    assert parse(argv[3:]).pz_shell_mm == "off" and "--pz-anterior-band" not in argv
    # detect segments the zones itself when the scene has none: it gets the same settings
    p.model, p.all_candidates = "focalnet-demo", True
    args = parse(logic.step_command("detection", tmp_path / "d1")[3:])
    assert args.all_candidates is True and args.zones is None and args.pz_shell_mm == "off"
    # a Retina U-Net model: the ticked box is not passed (the panel shows it disabled)
    p.model = "demo-retina-unet-phantoms"
    assert "--all" not in logic.step_command("detection", tmp_path / "d2")
    retina, focalnet = find_model("demo-retina-unet-phantoms", verify=False), find_model("focalnet-demo", verify=False)
    enabled, tip = CadLogic.all_candidates_state(retina)
    assert not enabled and "Retina U-Net" in tip and "demo-retina-unet-phantoms" in tip
    assert CadLogic.all_candidates_state(focalnet) == (True, ALL_CANDIDATES_TIP)
    assert "working point" in ALL_CANDIDATES_TIP and "FROC" in ALL_CANDIDATES_TIP
    assert CadLogic.all_candidates_state(None)[0] is False
    # zones in the scene go to detect as they are: no PZ post-processing on its command line
    p.model, p.pz_shell_mm = "focalnet-demo", 14.0
    logic.zones_from_label_image(case_files["zones"])
    argv = logic.step_command("detection", tmp_path / "d3")
    assert "--zones" in argv and "--all" in argv and not any(a.startswith("--pz-") for a in argv)
    p.all_candidates = False
    assert "--all" not in logic.step_command("detection", tmp_path / "d4")
    # saved and reloaded with the scene
    p.all_candidates, p.pz_shell_mm, p.pz_anterior_band = True, None, 0.25
    reloaded = _saved_and_reloaded(scene, tmp_path / "scene.mrml")
    q = parameters(reloaded, create=False)
    assert (q.all_candidates, q.pz_shell_mm, q.pz_anterior_band) == (True, None, 0.25)
    q.pz_shell_mm, q.all_candidates = 9.5, False
    assert (q.node.GetParameter("PzShellMm"), q.node.GetParameter("AllCandidates")) == ("9.5", "false")
    assert (q.pz_shell_mm, q.all_candidates) == (9.5, False)
