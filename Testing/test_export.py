"""`prostate-cad export` on the real ProstateX-0000 DICOM study: a DICOM SEG, a DICOM SR
(TID 1500) and a Slicer .seg.nrrd of hand-made detections (every kind of lesion mask, a
detection outside the image, overlapping lesions) and zones. Each file is read back by
other software: highdicom (SEG pixels per T2 instance, SR groups), dcmqi's converters
(`segimage2itkimage` masks voxel-identical to ours on the T2 grid, `tid1500reader`) and
slicerio (names, colours, terminology, masks). An image-file case gets one sentence
instead of DICOM, a detections file of another patient is refused."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib import cli, ggg_palette
from ProstateLesionCADLib.errors import ParameterError
from ProstateLesionCADLib.export.results import SEG_FILE, SEG_NRRD_FILE, SR_FILE, export_results
from ProstateLesionCADLib.export.segments import lesion_segments, zone_segments
from ProstateLesionCADLib.export.seg_nrrd import ANATOMIC_CONTEXT, TERMINOLOGY_CONTEXT
from ProstateLesionCADLib.export.source import dicom_source, find_source
from ProstateLesionCADLib.formats import Detection, DetectionCase, DetectionSet, read_detections, write_detections
from ProstateLesionCADLib.image_files import same_grid
from ProstateLesionCADLib.lesions.masks import detection_mask

CASE = "ProstateX-0000"
MODEL = {"name": "hand-made", "version": "7", "intended_use": "tests"}
# (id, ggg, score, centre index (i, j, k), half box in mm or None, blob peak or None)
DETECTIONS = [
    (11, 3, 0.81, (180, 190, 9), (8.0, 8.0, 7.0), 0.9),   # probability >= 0.5
    (12, 2, 0.50, (-900, -900, 40), (5.0, 5.0, 5.0), None),  # box outside the T2: no segment, rank 2 used up
    (13, 2, 0.41, (225, 215, 10), (6.0, 6.0, 6.0), 0.3),  # half-maximum of the blob
    (15, 1, 0.30, (205, 165, 7), None, None),             # no box: default 10 mm cube, ellipsoid
    (14, 0, 0.30, (150, 230, 8), (5.0, 4.0, 4.0), None),  # no probability: ellipsoid (same score, lower id first)
    (16, 1, 0.20, (184, 192, 9), (4.0, 4.0, 4.0), None),  # inside lesion 1: overlapping segments
]
EXPECTED = [  # (rank, id, mask source) of the segments written
    (1, 11, "probability>=0.5"), (3, 13, "half-maximum"), (4, 14, "ellipsoid"), (5, 15, "ellipsoid"),
    (6, 16, "probability>=0.5")]


def _point(grid: sitk.Image, index) -> np.ndarray:
    return np.array(grid.TransformContinuousIndexToPhysicalPoint([float(v) for v in index]))


def _blobs(grid: sitk.Image) -> sitk.Image:
    """Gaussian blobs (sigma 3 mm) with the given peaks on the T2 grid."""
    size = grid.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n) for n in reversed(size)), indexing="ij")
    index = np.stack([i, j, k], axis=-1).astype(float)
    matrix = np.asarray(grid.GetDirection(), float).reshape(3, 3) @ np.diag(grid.GetSpacing())
    points = index @ matrix.T + np.asarray(grid.GetOrigin())
    prob = np.zeros(points.shape[:3], np.float32)
    for _, _, _, centre, _, peak in DETECTIONS:
        if peak:
            r2 = np.sum((points - _point(grid, centre)) ** 2, axis=-1)
            prob = np.maximum(prob, peak * np.exp(-r2 / (2 * 3.0 ** 2))).astype(np.float32)
    image = sitk.GetImageFromArray(prob)
    image.CopyInformation(grid)
    return image


def _zones(grid: sitk.Image) -> sitk.Image:
    """CG: a 16 mm ball around the gland centre; PZ: the shell out to 26 mm behind it."""
    size = grid.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n) for n in reversed(size)), indexing="ij")
    spacing = grid.GetSpacing()
    ci, cj, ck = 195, 200, 9
    r = np.sqrt(((i - ci) * spacing[0]) ** 2 + ((j - cj) * spacing[1]) ** 2 + ((k - ck) * spacing[2]) ** 2)
    labels = np.zeros(r.shape, np.uint8)
    labels[r < 26] = 2
    labels[(r < 26) & (j < cj)] = 0  # PZ only posterior (larger j = posterior in this axial T2)
    labels[r < 16] = 1
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(grid)
    return image


def _detections(grid: sitk.Image, case_id: str = CASE) -> DetectionCase:
    dets = []
    for det_id, ggg, score, centre, half, _ in DETECTIONS:
        c = _point(grid, centre)
        box = None if half is None else (tuple(c - np.array(half)), tuple(c + np.array(half)))
        dets.append(Detection(det_id, ggg, score, tuple(c), box, None))
    return DetectionCase(case_id, dets)


@pytest.fixture(scope="module")
def study(prostatex_dir) -> Path:
    return prostatex_dir / CASE


@pytest.fixture(scope="module")
def grid(study):
    return dicom_source(study).t2_grid


def write_run(root: Path, grid: sitk.Image, detections: str = "det") -> Path:
    """root/<detections>/ (detections.json + lesion-probability.nrrd of DETECTIONS) and root/zones/zones.nrrd."""
    (root / detections).mkdir(parents=True)
    (root / "zones").mkdir()
    sitk.WriteImage(_blobs(grid), str(root / detections / "lesion-probability.nrrd"), True)
    case = _detections(grid)
    case.probability_map = root / detections / "lesion-probability.nrrd"
    write_detections(DetectionSet([case], MODEL), root / detections / "detections.json")
    sitk.WriteImage(_zones(grid), str(root / "zones" / "zones.nrrd"), True)
    return root


@pytest.fixture(scope="module")
def run_dir(grid, tmp_path_factory) -> Path:
    """A detect run's folder (detections.json + lesion-probability.nrrd) and a zones folder."""
    return write_run(tmp_path_factory.mktemp("run"), grid)


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def exported(study, run_dir):
    out = run_dir / "export"
    code, stdout, stderr = _cli(["export", str(study), "--detections", str(run_dir / "det" / "detections.json"),
                                 "--zones", str(run_dir / "zones" / "zones.nrrd"), "--out", str(out)])
    assert code == 0, stderr
    return out, (stdout, stderr)


@pytest.fixture(scope="module")
def segments(grid, run_dir):
    """The segments as the library computes them (what every file must hold)."""
    dset = read_detections(run_dir / "det" / "detections.json")
    probability = sitk.ReadImage(str(dset.cases[0].probability_map))
    zones = sitk.ReadImage(str(run_dir / "zones" / "zones.nrrd"))
    return lesion_segments(dset.cases[0], grid, probability, zones) + zone_segments(zones, grid)


@pytest.fixture(scope="module")
def t2_datasets(study):
    """The T2 instances in slice order (k), headers only."""
    folder = next(p for p in study.iterdir() if "t2tsetra" in p.name)
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in folder.glob("*.dcm")]
    normal = np.cross(*np.reshape(np.asarray(datasets[0].ImageOrientationPatient, float), (2, 3)))
    return sorted(datasets, key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} (dcmqi, a dev dependency) is not installed"
    return found


# ---------------------------------------------------------------- the segments

def test_grid_is_the_loaders_t2_grid(grid, prostatex_case):
    assert same_grid(grid, prostatex_case(CASE).t2, tol=1e-6)


def test_segments_are_the_librarys_lesion_masks(grid, run_dir, segments):
    """Ranks by score (ties by id), outside boxes skipped, every mask from detection_mask on the probability map."""
    lesions = [s for s in segments if s.lesion]
    assert [(s.lesion.rank, s.lesion.detection_id, s.lesion.mask_source) for s in lesions] == EXPECTED
    prob = sitk.GetArrayFromImage(sitk.ReadImage(str(run_dir / "det" / "lesion-probability.nrrd")))
    by_id = {d.id: d for d in read_detections(run_dir / "det" / "detections.json").cases[0].detections}
    shape = tuple(reversed(grid.GetSize()))
    for s in lesions:
        own = detection_mask(by_id[s.lesion.detection_id], grid, prob)
        assert s.crop.lo == own.lo and np.array_equal(s.crop.mask, own.mask)
        assert s.mask(shape).sum() == own.voxels > 0
        assert s.volume_cm3 == pytest.approx(own.voxels * np.prod(grid.GetSpacing()) / 1000)
        assert s.name == ggg_palette.lesion_name(s.lesion.rank, s.lesion.ggg, s.lesion.score, ascii_only=True)
    first, overlapping = lesions[0], lesions[-1]
    assert (first.mask(shape) & overlapping.mask(shape)).any()
    assert [s.name for s in segments[-2:]] == ["Central gland", "Peripheral zone"]
    assert all(s.name.isascii() and s.description.isascii() for s in segments)
    assert lesions[0].lesion.zone == "CG"


def test_ascii_names_keep_the_panels_names():
    assert ggg_palette.lesion_name(2, 2, 0.413) == "Lesion 2 · GGG2 · 0.41"
    assert ggg_palette.lesion_name(2, 5, 0.413, ascii_only=True) == "Lesion 2 - GGG3+ - 0.41"


# ---------------------------------------------------------------- DICOM SEG

def test_cli_writes_the_three_files(exported):
    out, (stdout, stderr) = exported
    assert sorted(p.name for p in out.iterdir()) == sorted([SEG_FILE, SR_FILE, SEG_NRRD_FILE])
    lines = stdout.splitlines()
    assert f"dicom-seg: {out / SEG_FILE} (5 lesions, 2 zones) of {CASE}" in lines
    assert any(line.startswith("note: 1 of 6 detections left out") for line in stderr.splitlines())  # notes: stderr


def test_seg_refers_to_the_t2_and_reads_back_with_highdicom(exported, segments, t2_datasets, grid):
    out, _ = exported
    seg = hd.seg.segread(out / SEG_FILE)
    t2 = t2_datasets[0]
    assert seg.StudyInstanceUID == t2.StudyInstanceUID and seg.PatientID == t2.PatientID
    assert seg.FrameOfReferenceUID == t2.FrameOfReferenceUID
    assert seg.SeriesInstanceUID not in {t2.SeriesInstanceUID} and int(seg.SeriesNumber) > 8
    assert seg.SegmentationType == "BINARY" and seg.ContentQualification == "RESEARCH"
    referenced = {item.ReferencedSOPInstanceUID for series in seg.ReferencedSeriesSequence
                  for item in series.ReferencedInstanceSequence}
    assert referenced == {ds.SOPInstanceUID for ds in t2_datasets}
    assert {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence} == {t2.SeriesInstanceUID}

    assert seg.number_of_segments == len(segments) == 7
    for number, segment in enumerate(segments, start=1):
        d = seg.get_segment_description(number)
        assert d.segment_label == segment.name and d.SegmentLabel.isascii()
        assert d.SegmentDescription == segment.description and d.tracking_id == segment.tracking_id
        assert (d.segmented_property_category.value, d.segmented_property_type.value) == \
            (segment.category.value, segment.type_code.value)
        assert d.algorithm_type.value == "AUTOMATIC"
        colour = hd.color.CIELabColor.from_dicom_value(d.RecommendedDisplayCIELabValue).to_rgb()
        assert np.allclose(colour, [round(255 * c) for c in segment.rgb], atol=1)
        if segment.lesion:
            assert f"score {segment.lesion.score:.4f}" in d.SegmentDescription
            assert segment.lesion.ggg_class.name in d.segment_label
            assert d.anatomic_regions[0].value == ggg_palette.PROSTATE.value
            assert d.algorithm_identification[0].AlgorithmName == MODEL["name"]
    assert {seg.get_segment_description(n).segmented_property_type.value for n in (6, 7)} == \
        {ggg_palette.TRANSITION_ZONE.value, ggg_palette.PERIPHERAL_ZONE.value}

    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[ds.SOPInstanceUID for ds in t2_datasets],
                                               segment_numbers=list(range(1, len(segments) + 1)),
                                               assert_missing_frames_are_empty=True)
    shape = tuple(reversed(grid.GetSize()))
    for n, segment in enumerate(segments):
        assert np.array_equal(pixels[..., n] > 0, segment.mask(shape)), segment.name


def _dcmqi_masks(seg_file: Path, grid: sitk.Image, folder: Path) -> tuple[list[str], list[np.ndarray]]:
    """dcmqi's segimage2itkimage: segment labels and masks, pasted onto the T2 grid (array order k, j, i)."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([_tool("segimage2itkimage"), "--inputDICOM", str(seg_file), "--outputDirectory",
                           str(folder), "-t", "nrrd"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    meta = json.loads((folder / "meta.json").read_text())
    labels = [attrs[0]["SegmentLabel"] for attrs in meta["segmentAttributes"]]
    shape = tuple(reversed(grid.GetSize()))
    masks = []
    for number in range(1, len(labels) + 1):
        image = sitk.ReadImage(str(folder / f"{number}.nrrd"))
        assert np.allclose(image.GetDirection(), grid.GetDirection(), atol=1e-4)
        assert np.allclose(image.GetSpacing(), grid.GetSpacing(), atol=1e-4)
        offset = np.array(grid.TransformPhysicalPointToContinuousIndex(image.GetOrigin()))
        assert np.allclose(offset, np.round(offset), atol=1e-3), "dcmqi's image is not on the T2 grid"
        i, j, k = (int(v) for v in np.round(offset))
        ni, nj, nk = image.GetSize()
        on_t2 = np.zeros(shape, bool)
        on_t2[k:k + nk, j:j + nj, i:i + ni] = sitk.GetArrayFromImage(image) > 0
        masks.append(on_t2)
    return labels, masks


def test_dcmqi_converts_the_seg_back_to_our_masks_on_the_t2_grid(exported, segments, grid, tmp_path):
    out, _ = exported
    labels, masks = _dcmqi_masks(out / SEG_FILE, grid, tmp_path)
    assert labels == [s.name for s in segments]
    shape = tuple(reversed(grid.GetSize()))
    for segment, mask in zip(segments, masks):
        assert np.array_equal(mask, segment.mask(shape)), segment.name


@pytest.mark.parametrize("true_enhanced", [False, True], ids=["legacy-converted", "enhanced-mr"])
def test_seg_over_a_multiframe_t2_refers_to_its_frames(study, run_dir, segments, grid, tmp_path, true_enhanced):
    """A T2 stored as one multi-frame object (its frames in reverse slice order): the SEG's frames
    refer to the T2 frames at their positions, and dcmqi gives the same masks as over single-frame images."""
    from dicom_variants import legacy_enhanced

    copy = legacy_enhanced(study, tmp_path / "study", numbers=[4], true_enhanced=true_enhanced)
    source = dicom_source(copy)
    assert same_grid(source.t2_grid, grid, tol=1e-6) and len(source.dicom.datasets) == 1
    assert source.dicom.frame_of_slice != sorted(source.dicom.frame_of_slice)
    code, _, stderr = _cli(["export", str(copy), "--detections", str(run_dir / "det" / "detections.json"),
                            "--zones", str(run_dir / "zones" / "zones.nrrd"), "--out", str(tmp_path / "out"),
                            "--dicom-seg"])
    assert code == 0, stderr
    t2 = source.dicom.datasets[0]
    seg = hd.seg.segread(tmp_path / "out" / SEG_FILE)
    assert [item.ReferencedSOPInstanceUID for series in seg.ReferencedSeriesSequence
            for item in series.ReferencedInstanceSequence] == [t2.SOPInstanceUID]
    shape = tuple(reversed(grid.GetSize()))
    pixels = seg.get_pixels_by_source_frame(
        t2.SOPInstanceUID, source_frame_numbers=[f + 1 for f in source.dicom.frame_of_slice],
        segment_numbers=list(range(1, len(segments) + 1)), assert_missing_frames_are_empty=True)
    labels, masks = _dcmqi_masks(tmp_path / "out" / SEG_FILE, grid, tmp_path / "dcmqi")
    assert labels == [s.name for s in segments]
    for n, segment in enumerate(segments):
        assert np.array_equal(pixels[..., n] > 0, segment.mask(shape)), segment.name
        assert np.array_equal(masks[n], segment.mask(shape)), segment.name


def test_demo_detector_run_exports_into_its_own_folder(study, grid, tmp_path):
    """The bundled demo detector on the DICOM study (demo cascade zones, no registration), then export
    into the detect folder itself: the run's files stay, the SEG holds every detection of the run."""
    code, _, stderr = _cli(["zones", str(study), "--backend", "cascade", "--out", str(tmp_path / "zones")])
    assert code == 0, stderr
    run = tmp_path / "detect"
    code, _, stderr = _cli(["detect", str(study), "--model", "demo-retina-unet-phantoms", "--out", str(run),
                            "--zones", str(tmp_path / "zones" / "zones.nrrd"), "--no-register", "--device", "cpu"])
    assert code == 0, stderr
    code, _, stderr = _cli(["export", str(study), "--detections", str(run / "detections.json"),
                            "--zones", str(tmp_path / "zones" / "zones.nrrd"), "--out", str(run)])
    assert code == 0, stderr
    assert {"detections.json", "lesion-probability.nrrd", SEG_FILE, SR_FILE, SEG_NRRD_FILE} <= \
        {p.name for p in run.iterdir()}
    detections = read_detections(run / "detections.json").cases[0]
    seg = hd.seg.segread(run / SEG_FILE)
    lesions = [seg.get_segment_description(n) for n in range(1, seg.number_of_segments + 1)
               if seg.get_segment_description(n).segmented_property_category.value == ggg_palette.CATEGORY.value]
    assert len(lesions) == len(detections.detections) > 0
    assert all(d.algorithm_identification[0].AlgorithmName == "demo-retina-unet-phantoms" for d in lesions)
    zones = [seg.get_segment_description(n).algorithm_identification[0].AlgorithmName
             for n in range(len(lesions) + 1, seg.number_of_segments + 1)]
    assert zones and set(zones) == {"zones-demo-cascade"}


# ---------------------------------------------------------------- DICOM SR

def test_sr_reads_back_with_highdicom_and_dcmqi(exported, segments, t2_datasets, tmp_path):
    out, _ = exported
    seg = pydicom.dcmread(out / SEG_FILE, stop_before_pixels=True)
    sr = hd.sr.srread(out / SR_FILE)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.StudyInstanceUID == t2_datasets[0].StudyInstanceUID and int(sr.SeriesNumber) == int(seg.SeriesNumber) + 1
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    evidence = {item.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert seg.SOPInstanceUID in evidence and {ds.SOPInstanceUID for ds in t2_datasets} <= evidence

    tracking = {n: seg.SegmentSequence[n - 1].TrackingUID for n in range(1, len(segments) + 1)}
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(segments)
    for number, (group, segment) in enumerate(zip(groups, segments), start=1):
        reference = group.referenced_segment
        assert reference.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert list(reference.referenced_segment_numbers) == [number]
        assert reference.source_series_for_segmentation.value == t2_datasets[0].SeriesInstanceUID
        assert group.tracking_uid == tracking[number] and group.tracking_identifier == segment.tracking_id
        volume = group.get_measurements(name=hd.sr.CodedConcept("118565006", "SCT", "Volume"))[0]
        assert volume.value == pytest.approx(segment.volume_cm3, abs=1e-6) and volume.unit.value == "cm3"
        assert group.finding_type.value == segment.type_code.value
        if segment.lesion:
            score = group.get_measurements(name=hd.sr.CodedConcept("SCORE", "99PLCAD", "Detection score"))[0]
            assert score.value == pytest.approx(segment.lesion.score, abs=1e-6)
            ggg = group.get_qualitative_evaluations()[0]
            assert ggg.value.value == segment.lesion.ggg_class.name
    detections = sr.content.get_image_measurement_groups()  # the TID 1501 groups: detections with their centres
    lesions = [s for s in segments if s.lesion]
    assert len(detections) == len(lesions)
    for group, segment in zip(detections, lesions):
        assert group.tracking_uid == tracking[segments.index(segment) + 1]
        score = group.get_measurements()[0]
        assert score.value == pytest.approx(segment.lesion.score, abs=1e-6)
        point = score.referenced_coordinates[0]
        assert point.GraphicType == "POINT" and point.ConceptNameCodeSequence[0].CodeValue == "111010"
        assert np.allclose(point.value, segment.lesion.center_lps, atol=1e-3)
        assert point.ReferencedFrameOfReferenceUID == t2_datasets[0].FrameOfReferenceUID

    proc = subprocess.run([_tool("tid1500reader"), "--inputDICOM", str(out / SR_FILE), "--outputMetadata",
                           str(tmp_path / "sr.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    read = json.loads((tmp_path / "sr.json").read_text())["Measurements"]
    with_segments = [m for m in read if "ReferencedSegment" in m]
    assert [m["ReferencedSegment"] for m in with_segments] == list(range(1, len(segments) + 1))
    assert {m["segmentationSOPInstanceUID"] for m in with_segments} == {seg.SOPInstanceUID}


# ---------------------------------------------------------------- .seg.nrrd

def test_seg_nrrd_round_trip_with_slicerio(exported, segments, grid):
    import slicerio

    out, _ = exported
    raw = (out / SEG_NRRD_FILE).read_bytes()
    header = raw[:raw.index(b"\n\n")]
    assert header.isascii()
    read = slicerio.read_segmentation(str(out / SEG_NRRD_FILE))
    assert np.allclose(read["ijkToLPS"][:3, 3], grid.GetOrigin())
    assert np.allclose(read["ijkToLPS"][:3, :3],
                       np.asarray(grid.GetDirection()).reshape(3, 3) @ np.diag(grid.GetSpacing()))
    assert slicerio.segment_names(read) == [s.name for s in segments]
    shape = tuple(reversed(grid.GetSize()))
    for segment, entry in zip(segments, read["segments"]):
        assert np.allclose(entry["color"], segment.rgb, atol=1e-6)
        terminology = entry["terminology"]
        assert terminology["contextName"] == TERMINOLOGY_CONTEXT
        assert terminology["category"] == [segment.category.scheme, segment.category.value, segment.category.meaning]
        assert terminology["type"][1] == segment.type_code.value
        if segment.lesion:
            assert terminology["anatomicContextName"] == ANATOMIC_CONTEXT
            assert terminology["anatomicRegion"] == ["SCT", "41216001", "Prostate"]
            assert entry["tags"]["ProstateLesionCAD.GGG"] == str(segment.lesion.ggg)
            assert float(entry["tags"]["ProstateLesionCAD.Score"]) == segment.lesion.score
        mask = slicerio.segment_mask(read, entry["id"])  # (i, j, k)
        assert np.array_equal(mask.transpose(2, 1, 0), segment.mask(shape)), segment.name
    assert read["voxels"].ndim == 4  # overlapping lesions and zones in layers, as Slicer stores them


# ---------------------------------------------------------------- other cases and refusals

def test_image_file_case_gets_seg_nrrd_and_one_sentence_for_dicom(run_dir, repo_dir, grid, tmp_path):
    sample = repo_dir / "Resources" / "Sample" / CASE  # the same study as NRRD files (case.json)
    assert find_source(sample).dicom is None
    code, _, stderr = _cli(["export", str(sample), "--detections", str(run_dir / "det" / "detections.json"),
                            "--out", str(tmp_path / "a")])
    assert code == 0 and sorted(p.name for p in (tmp_path / "a").iterdir()) == [SEG_NRRD_FILE]
    assert "note: no DICOM SEG or SR: " in stderr and "give the DICOM study folder instead" in stderr
    code, _, stderr = _cli(["export", str(sample), "--detections", str(run_dir / "det" / "detections.json"),
                            "--out", str(tmp_path / "b"), "--dicom-seg"])
    assert code == 2 and not (tmp_path / "b").exists()
    stderr = "".join(line for line in stderr.splitlines(True) if not line.startswith("PROGRESS "))
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and "not as DICOM" in stderr
    t2_file = tmp_path / "t2.nrrd"
    sitk.WriteImage(sitk.Image(grid), str(t2_file))
    code, _, stderr = _cli(["export", str(t2_file), "--zones", str(run_dir / "zones" / "zones.nrrd"),
                            "--out", str(tmp_path / "c"), "--dicom-sr"])
    assert code == 2 and "is an image file, not a DICOM study" in stderr


def test_detections_of_another_case_are_refused_unless_named(study, grid, run_dir, tmp_path):
    other = tmp_path / "other.json"
    write_detections(DetectionSet([_detections(grid, "ProstateX-0999")], MODEL), other)
    code, _, stderr = _cli(["export", str(study), "--detections", str(other), "--out", str(tmp_path / "a")])
    assert code == 2 and "'ProstateX-0999'" in stderr and "--case-id" in stderr and not (tmp_path / "a").exists()
    code, stdout, stderr = _cli(["export", str(study), "--detections", str(other), "--case-id", "ProstateX-0999",
                                 "--out", str(tmp_path / "b"), "--seg-nrrd", "--min-score", "0.35"])
    assert code == 0, stderr
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [SEG_NRRD_FILE]
    import slicerio

    # ranks stay those of the whole run, so names match the panel's
    assert slicerio.segment_names(slicerio.read_segmentation(str(tmp_path / "b" / SEG_NRRD_FILE))) == \
        ["Lesion 1 - GGG3+ - 0.81", "Lesion 3 - GGG2 - 0.41"]


def test_nothing_to_export_is_one_sentence(study, tmp_path):
    with pytest.raises(ParameterError, match="Nothing to export"):
        export_results(study, tmp_path / "a")
    code, _, stderr = _cli(["export", str(study), "--out", str(tmp_path / "b"), "--dicom-sr"])
    assert code == 2 and stderr.startswith("error: Nothing to export")


def test_sr_alone_brings_its_seg(study, run_dir, tmp_path):
    code, stdout, stderr = _cli(["export", str(study), "--zones", str(run_dir / "zones" / "zones.nrrd"),
                                 "--out", str(tmp_path), "--dicom-sr"])
    assert code == 0, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([SEG_FILE, SR_FILE])
    assert "the SEG is written with it" in stderr  # a note: stderr
    seg = hd.seg.segread(tmp_path / SEG_FILE)
    assert [seg.get_segment_description(n).segment_label for n in (1, 2)] == ["Central gland", "Peripheral zone"]


def test_case_json_over_a_dicom_folder_is_a_dicom_source(study, grid, tmp_path):
    """A case JSON whose T2 comes from its `dicom` folder refers to those instances; one with a T2 file does not."""
    (tmp_path / "case.json").write_text(json.dumps({"format": "prostate-cad-case/1", "dicom": str(study)}))
    source = find_source(tmp_path)
    assert source.case_id == CASE and source.dicom is not None and same_grid(source.t2_grid, grid, tol=1e-6)
    t2 = sitk.Image(grid)
    t2[0, 0, 0] = 1  # not constant: a constant T2 is refused when a study is loaded
    sitk.WriteImage(t2, str(tmp_path / "t2.nrrd"))
    (tmp_path / "other.json").write_text(json.dumps({"format": "prostate-cad-case/1", "dicom": str(study),
                                                     "T2": "t2.nrrd"}))
    assert find_source(tmp_path / "other.json").dicom is None
