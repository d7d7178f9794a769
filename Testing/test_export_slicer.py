"""The exported segments are the CAD panel's (real MRML classes from the slicer-core wheel):
the same ranks, names (ASCII), volumes, zones and voxels as the panel's lesion segments
for the same run, the same terminology entries and colours as both panels give lesions
and zones, and Slicer's own segmentation reader loads the .seg.nrrd into segments whose
voxels, names, colours, terminology and lesion tags (read back by the panel's
`lesion_infos`) are those exported."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ProstateLesionCAD"))

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is a dev dependency")  # noqa: E402

from ProstateLesionCADLib import coordinates, ggg_palette  # noqa: E402
from ProstateLesionCADLib.export.results import SEG_NRRD_FILE, export_results  # noqa: E402
from ProstateLesionCADLib.export.seg_nrrd import segment_id, terminology  # noqa: E402
from ProstateLesionCADLib.export.segments import lesion_segments, zone_segments  # noqa: E402
from ProstateLesionCADLib.export.source import dicom_source  # noqa: E402
from ProstateLesionCADLib.formats import DetectionSet, write_detections  # noqa: E402
from ProstateLesionCADSlicer import lesion_nodes, mrml_volumes, zonal_logic  # noqa: E402
from ProstateLesionCADSlicer.annotate_logic import segment_mask  # noqa: E402
from test_export import CASE, MODEL, _blobs, _detections, _zones  # noqa: E402


@pytest.fixture(scope="module")
def grid(prostatex_dir):
    return dicom_source(prostatex_dir / CASE).t2_grid


@pytest.fixture(scope="module")
def coarse_probability(grid):
    """The run's probability map on a coarser grid, so both sides must resample it."""
    fine = _blobs(grid)
    coarse = sitk.Image([n // 2 for n in grid.GetSize()[:2]] + [grid.GetSize()[2]], sitk.sitkFloat32)
    coarse.SetSpacing([grid.GetSpacing()[0] * 2, grid.GetSpacing()[1] * 2, grid.GetSpacing()[2]])
    coarse.SetOrigin(grid.GetOrigin())
    coarse.SetDirection(grid.GetDirection())
    return sitk.Resample(fine, coarse, sitk.Transform(), sitk.sitkLinear, 0.0)


def test_export_and_panel_compute_the_same_lesions(grid, coarse_probability):
    case = _detections(grid)
    zones = _zones(grid)
    panel = lesion_nodes.lesion_infos_from_case(case, grid, coarse_probability, zones)
    ours = lesion_segments(case, grid, coarse_probability, zones)
    assert len(panel) == len(ours) == 5
    for (info, mask), segment in zip(panel, ours):
        facts = segment.lesion
        assert (facts.rank, facts.detection_id, facts.ggg, facts.score, facts.zone, facts.mask_source) == \
            (info.rank, info.detection_id, info.ggg, info.score, info.zone, info.mask_source)
        assert facts.volume_cm3 == info.volume_cm3
        assert np.allclose(coordinates.lps_to_ras(facts.center_lps), info.center_ras)
        assert segment.name == info.name.replace(" · ", " - ") and segment.name.isascii()
        assert segment.crop.lo == mask.lo and np.array_equal(segment.crop.mask, mask.mask)
        assert segment.rgb == ggg_palette.ggg_class(info.ggg).rgb


def test_terminology_and_colours_are_the_panels(grid):
    case = _detections(grid)
    zones = _zones(grid)
    from slicerio.segmentation import terminology_entry_to_string

    for segment in lesion_segments(case, grid, None, zones):
        assert terminology_entry_to_string(terminology(segment)) == \
            lesion_nodes.terminology_entry(segment.lesion.ggg)
    zone_list = zone_segments(zones, grid)
    assert [s.name for s in zone_list] == [zonal_logic.CG, zonal_logic.PZ]
    for segment in zone_list:
        assert terminology_entry_to_string(terminology(segment)) == zonal_logic.terminology_entry(segment.name)
        rgb, code, meaning = zonal_logic.SEGMENTS[segment.name]
        assert segment.rgb == rgb and (segment.type_code.value, segment.type_code.meaning) == (code, meaning)


def test_slicer_reads_the_seg_nrrd_as_the_panel_would_show_it(prostatex_dir, grid, tmp_path):
    case = _detections(grid)
    sitk.WriteImage(_blobs(grid), str(tmp_path / "lesion-probability.nrrd"))
    case.probability_map = tmp_path / "lesion-probability.nrrd"
    write_detections(DetectionSet([case], MODEL), tmp_path / "detections.json")
    sitk.WriteImage(_zones(grid), str(tmp_path / "zones.nrrd"))
    result = export_results(prostatex_dir / CASE, tmp_path / "out", detections=tmp_path / "detections.json",
                            zones=tmp_path / "zones.nrrd", formats=["seg-nrrd"])

    scene = slicer.vtkMRMLScene()
    lesion_nodes.ensure_segmentation_converters()
    t2_node = mrml_volumes.image_to_volume_node(scene, sitk.Cast(grid, sitk.sitkFloat32), "T2")
    seg_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "exported")
    storage = seg_node.CreateDefaultStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "out" / SEG_NRRD_FILE))
    assert storage.ReadData(seg_node)
    segmentation = seg_node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(result.segments) == 7
    shape = tuple(reversed(grid.GetSize()))
    for segment in result.segments:
        loaded = segmentation.GetSegment(segment_id(segment))
        assert loaded is not None and loaded.GetName() == segment.name
        assert np.allclose(loaded.GetColor(), segment.rgb, atol=1e-5)
        expected = (lesion_nodes.terminology_entry(segment.lesion.ggg) if segment.lesion
                    else zonal_logic.terminology_entry(segment.name))
        assert lesion_nodes.segment_tag(loaded, "TerminologyEntry") == expected
        assert np.array_equal(segment_mask(seg_node, segment_id(segment), t2_node), segment.mask(shape)), segment.name
    infos = lesion_nodes.lesion_infos(seg_node)  # what the panel's filter and table read
    lesions = [s.lesion for s in result.segments if s.lesion]
    assert [(i.rank, i.detection_id, i.ggg, i.score, i.volume_cm3, i.zone, i.mask_source) for i in infos] == \
        [(f.rank, f.detection_id, f.ggg, f.score, f.volume_cm3, f.zone, f.mask_source) for f in lesions]
    assert all(np.allclose(i.center_ras, coordinates.lps_to_ras(f.center_lps)) for i, f in zip(infos, lesions))
