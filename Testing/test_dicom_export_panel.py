"""The CAD panel's "Export to DICOM database" on real MRML classes and the real ProstateX-0000 DICOM study.

The T2 is loaded as Slicer's DICOM scalar volume plugin loads it (test_dicom_database.archetype_loader:
vtkMRMLVolumeArchetypeStorageNode, DICOM.instanceUIDs one per slice); the detections are the hand-made
ones of test_export on that T2, shown with the panel's own `load_detections`, the zones the panel's
segmentation. The step runs the real `prostate-cad export` as a child process of the panel's
ProcessRunner; the SEG and SR it writes (the files the panel imports) are read back with highdicom and
must refer to the T2 node's own SOP instances. ctkDICOMDatabase is not in the slicer-core wheel:
`StudyFiles` answers the four database calls the glue makes (seriesForStudy, filesForSeries,
fileForInstance, fileValue) from the study's files; the import into the database
(DICOMUtils.importDicom) only runs inside Slicer.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is a dev dependency")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ProstateLesionCAD"))

from ProstateLesionCADLib import cli  # noqa: E402
from ProstateLesionCADLib.errors import CaseError, FormatError  # noqa: E402
from ProstateLesionCADLib.formats import DetectionSet, write_detections  # noqa: E402
from ProstateLesionCADSlicer import dicom_database, dicom_export  # noqa: E402
from ProstateLesionCADSlicer.background_process import SUCCEEDED, ProcessRunner, cli_command  # noqa: E402
from ProstateLesionCADSlicer.cad_logic import CadLogic  # noqa: E402
from ProstateLesionCADSlicer.mrml_volumes import image_to_volume_node, volume_node_to_image  # noqa: E402
from test_dicom_database import ThreadIndexer, archetype_loader  # noqa: E402
from test_export import CASE, MODEL, _blobs, _detections, _zones  # noqa: E402

STEP_TIMEOUT_S = 300


class StudyFiles:
    """The study's files answering the ctkDICOMDatabase calls the glue makes, with the tags it reads."""

    def __init__(self, folder: Path):
        self.headers = {str(p): pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.rglob("*"))
                        if p.is_file() and pydicom.misc.is_dicom(p)}

    def seriesForStudy(self, study):
        return sorted({str(ds.SeriesInstanceUID) for ds in self.headers.values() if ds.StudyInstanceUID == study})

    def filesForSeries(self, series, hits=-1):
        files = [p for p, ds in self.headers.items() if ds.SeriesInstanceUID == series]
        return files if hits < 0 else files[:hits]

    def fileForInstance(self, uid):
        return next((p for p, ds in self.headers.items() if ds.SOPInstanceUID == uid), "")

    def fileValue(self, path, tag):
        group, element = (int(part, 16) for part in tag.split(","))
        element = self.headers[path].get((group, element))
        return str(element.value) if element is not None else ""


@pytest.fixture(scope="module")
def study(prostatex_dir) -> Path:
    return prostatex_dir / CASE


@pytest.fixture(scope="module")
def database(study):
    return StudyFiles(study)


@pytest.fixture(scope="module")
def t2_entry(study):
    out = StringIO()
    with redirect_stdout(out):
        assert cli.main(["load", str(study), "--json"]) == 0
    plan = json.loads(out.getvalue())
    return next(entry for entry in plan["roles"] if entry["slot"] == "T2")


@pytest.fixture()
def panel(t2_entry, tmp_path):
    """A scene with the T2 loaded from DICOM, a detection run shown (kept as the panel keeps it) and zones."""
    scene = slicer.vtkMRMLScene()
    cad = CadLogic(scene)
    t2 = archetype_loader(scene)(list(t2_entry["files"]), f"{CASE} T2")
    t2.SetAttribute(dicom_database.SERIES_UID_ATTRIBUTE, t2_entry["series_uid"])
    cad.params.t2, cad.params.case_id = t2, CASE
    grid = volume_node_to_image(t2)
    step_out = tmp_path / "step-out"
    step_out.mkdir()
    sitk.WriteImage(_blobs(grid), str(step_out / "lesion-probability.nrrd"), True)
    case = _detections(grid)
    case.probability_map = step_out / "lesion-probability.nrrd"
    write_detections(DetectionSet([case], MODEL), step_out / "detections.json")
    kept = cad.keep_detection_run(step_out)
    shutil.rmtree(step_out)  # the runner removes the step's folder once its result is shown
    cad.load_detections(kept)
    cad.zones_from_label_image(_zones(grid))
    yield cad
    kept = cad.kept_run
    cad.forget_kept_run()
    assert not kept.exists() and cad.kept_run is None


def test_offered_only_with_dicom_instances_an_open_database_and_detections(panel, tmp_path):
    p = panel.params
    assert dicom_export.export_availability(p, True)[0]
    assert "Slicer's DICOM database is not open" in dicom_export.export_availability(p, False)[1]

    nrrd = image_to_volume_node(panel.scene, volume_node_to_image(p.t2), "sample T2")  # as the NRRD sample loads
    p.t2 = nrrd
    offered, tip = dicom_export.export_availability(p, True)
    assert not offered and "'sample T2' was not loaded from DICOM (it has no DICOM instance UIDs)" in tip
    with pytest.raises(CaseError, match="no DICOM instance UIDs"):
        dicom_export.panel_export_command(panel, tmp_path / "work", None)
    case_folder = tmp_path / "case"
    case_folder.mkdir()
    (case_folder / "case.json").write_text("{}")
    p.dicom_folder = str(case_folder)  # image files with their roles: still nothing to refer to
    assert not dicom_export.export_availability(p, True)[0]
    p.dicom_folder = str(tmp_path)  # a DICOM folder the project's loader read the study from
    assert dicom_export.export_availability(p, True)[0]

    p.detections_file = str(tmp_path / "gone" / "detections.json")
    offered, tip = dicom_export.export_availability(p, True)
    assert not offered and tip == "Detect lesions (or load a detections file) first."
    p.t2 = None
    assert dicom_export.export_availability(p, True) == (False, "Select a T2 volume first.")


def test_kept_run_outlives_the_step_folder_and_replaces_the_previous_one(panel, tmp_path):
    first = panel.kept_run
    assert (first / "detections.json").is_file() and (first / "lesion-probability.nrrd").is_file()
    again = tmp_path / "again"
    shutil.copytree(first, again)
    path = panel.keep_detection_run(again)
    assert path == panel.kept_run / "detections.json" and path.is_file() and not first.exists()


def test_the_argv_exports_the_shown_run_over_the_databases_study_choosing_the_t2_series(
        panel, database, study, t2_entry, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    argv = dicom_export.panel_export_command(panel, work, database, python="python")
    assert argv == cli_command("export", [work / "study-case.json", "--detections", panel.params.detections_file,
                                          "--dicom-seg", "--dicom-sr", "--out", work / "out",
                                          "--zones", work / "zones.nrrd"], "python")
    args = cli.build_parser().parse_args(argv[3:])
    assert (args.dicom_seg, args.dicom_sr, args.seg_nrrd) == (True, True, False)
    case = json.loads((work / "study-case.json").read_text())
    assert case == {"case_id": CASE, "dicom": "study", "choose": {"T2": t2_entry["series_uid"]}}
    linked = sorted(os.path.realpath(p) for p in (work / "study").iterdir())
    assert linked == sorted(os.path.realpath(p) for p in database.headers)  # every series of the study
    zones = sitk.ReadImage(str(work / "zones.nrrd"))
    assert sorted(set(sitk.GetArrayViewFromImage(zones).ravel().tolist())) == [0, 1, 2]

    files, series = dicom_database.volume_study_files(database, panel.params.t2)
    assert series == t2_entry["series_uid"] and sorted(files) == sorted(database.headers)


def test_the_step_writes_a_seg_and_sr_on_the_t2_instances_through_the_runner(panel, database, tmp_path):
    t2_uids = panel.params.t2.GetAttribute(dicom_database.INSTANCE_UIDS_ATTRIBUTE).split()
    runner = ProcessRunner()
    runner.start(dicom_export.STEP, lambda work: dicom_export.panel_export_command(panel, work, database))
    update = runner.wait(STEP_TIMEOUT_S)
    try:
        assert update.state == SUCCEEDED, update.error + "\n" + "\n".join(update.log)
        seg_file, sr_file = dicom_export.exported_files(update.out_dir)
        assert sorted(p.name for p in update.out_dir.glob("*.dcm")) == sorted(dicom_export.EXPORTED)
        seg = hd.seg.segread(seg_file)
        t2 = pydicom.dcmread(database.fileForInstance(t2_uids[0]), stop_before_pixels=True)
        assert seg.StudyInstanceUID == t2.StudyInstanceUID and seg.FrameOfReferenceUID == t2.FrameOfReferenceUID
        numbers = {int(ds.SeriesNumber) for ds in database.headers.values()}
        assert int(seg.SeriesNumber) > max(numbers)  # a new series in the study
        referenced = [item.ReferencedSOPInstanceUID for series in seg.ReferencedSeriesSequence
                      for item in series.ReferencedInstanceSequence]
        assert sorted(referenced) == sorted(t2_uids)
        assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [t2.SeriesInstanceUID]
        assert seg.number_of_segments == 7  # five drawable lesions and the two zones
        sr = hd.sr.srread(sr_file)
        assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34" and sr.StudyInstanceUID == t2.StudyInstanceUID
        evidence = {item.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                    for series in s.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
        assert seg.SOPInstanceUID in evidence and set(t2_uids) <= evidence
        assert len(sr.content.get_volumetric_roi_measurement_groups()) == 7

        # the import: the files leave the step's folder (removed next) and are copied by the indexer's thread
        indexed: list[str] = []
        job = dicom_export.start_import(update.out_dir, indexed, ThreadIndexer(0.01))
        assert job.indexer.backgroundImportEnabled and job.indexer.copied is True
        assert not seg_file.exists() and Path(job.folder) != update.out_dir
        update.cleanup()
        while not job.finished:
            time.sleep(0.01)
        assert sorted(Path(p).name for p in indexed) == sorted(dicom_export.EXPORTED)
        assert dicom_export.finish_import(job) == sorted(dicom_export.EXPORTED) and not Path(job.folder).exists()
    finally:
        update.cleanup()
    with pytest.raises(FormatError, match="the export wrote no segmentation.dcm or measurement-report.dcm"):
        dicom_export.exported_files(tmp_path)


def test_a_study_read_from_a_dicom_folder_is_exported_from_that_folder(panel, study, tmp_path):
    p = panel.params
    p.t2 = image_to_volume_node(panel.scene, volume_node_to_image(p.t2), f"{CASE} T2 (project loader)")
    p.dicom_folder = str(study)  # as CadLogic.load_study leaves it: the project's loader read this folder
    work = tmp_path / "work"
    work.mkdir()
    argv = dicom_export.panel_export_command(panel, work, None, python="python")
    assert argv[3:6] == ["export", str(study), "--detections"] and not (work / "study-case.json").exists()
