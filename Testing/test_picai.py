"""PI-CAI end to end on phantoms: `phantoms --format picai` writes an archive in PI-CAI's layout,
`detect` (the bundled demo detector) runs on each of its case references, `export --picai`
writes detection maps, and `evaluate --picai` runs the paper's evaluation and picai_eval on the
same detections. Where both define the same number (patient-level AUROC from the same case
scores) they agree to 1e-6; the detection maps are what picai_eval's own parser accepts."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from ProstateLesionCADLib import cli
from ProstateLesionCADLib.demo.detector_model import DEMO_NAME
from ProstateLesionCADLib.errors import CaseError, FormatError
from ProstateLesionCADLib.evaluation.picai import picai_metrics
from ProstateLesionCADLib.export.picai_maps import detection_map
from ProstateLesionCADLib.formats import Detection, DetectionCase, GroundTruthCase, Lesion, read_detections
from ProstateLesionCADLib.lesions.masks import detection_mask
from ProstateLesionCADLib.study.loading import load_case
from ProstateLesionCADLib.study.picai_archive import list_cases, read_ground_truth, read_marksheet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_CASES = 6
# the public marksheet's header (picai_labels/clinical_information/marksheet.csv)
PICAI_COLUMNS = ["patient_id", "study_id", "mri_date", "patient_age", "psa", "psad", "prostate_volume",
                 "histopath_type", "lesion_PIRADS", "lesion_GS", "lesion_ISUP", "case_ISUP", "case_csPCa", "center"]


def _cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The README's PI-CAI example: phantoms -> detect (the archive) -> export --picai -> evaluate --picai."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    root = tmp_path_factory.mktemp("picai")
    archive, detections, maps = root / "archive", root / "detections", root / "maps"
    code, _ = _cli(["phantoms", "--format", "picai", "--n", str(N_CASES), "--seed", "3", "--size", "64",
                    "--spacing-xy", "1.25", "--slices", "16", "--out", str(archive)])
    assert code == 0
    refs = list_cases(archive)
    # the whole archive in one batch: one output folder per case reference
    code, text = _cli(["detect", str(archive), "--model", DEMO_NAME, "--no-register", "--device", "cpu",
                       "--out", str(detections)])
    assert code == 0, text
    assert sorted(p.name for p in detections.iterdir() if p.is_dir()) == [ref.name for ref in refs]
    for ref in refs:
        code, text = _cli(["export", str(ref), "--detections", str(detections / ref.name / "detections.json"),
                           "--picai", "--out", str(maps)])
        assert code == 0, text
    code, report = _cli(["evaluate", "--detections", str(detections), "--ground-truth", str(archive), "--picai",
                         "--picai-maps", str(maps), "--bootstrap", "0", "--out", str(root / "evaluation")])
    assert code == 0
    return {"archive": archive, "refs": refs, "detections": detections, "maps": maps, "report": report,
            "metrics": json.loads((root / "evaluation" / "metrics.json").read_text()),
            "scores": json.loads((root / "evaluation" / "scores.json").read_text())}


def test_archive_has_picai_layout_and_loads_as_cases(run):
    archive, refs = run["archive"], run["refs"]
    with open(archive / "picai_labels" / "clinical_information" / "marksheet.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == PICAI_COLUMNS and len(rows) == N_CASES
    assert [r.name for r in refs] == sorted(f"{row['patient_id']}_{row['study_id']}" for row in rows)
    assert all(ref.parent == archive / "images" / ref.name.split("_")[0] for ref in refs)
    assert {row["case_csPCa"] for row in rows} == {"YES", "NO"}  # the set has both kinds
    sheet = read_marksheet(archive)
    truth = read_ground_truth(archive)
    for row, gt in zip(sorted(rows, key=lambda r: r["patient_id"]), truth.ground_truth.cases):
        delineation = sitk.GetArrayFromImage(sitk.ReadImage(str(gt.lesion_mask)))
        assert sheet[gt.case_id].case_isup == int(row["case_ISUP"]) == max(int(g or 0) for g in row["lesion_ISUP"].split(","))
        assert gt.patient_ggg == min(int(row["case_ISUP"]), 3)
        # csPCa lesions only are delineated, each with its ISUP grade
        assert (row["case_csPCa"] == "YES") == bool(delineation.any())
        n = ndimage.label(delineation > 0, structure=np.ones((3, 3, 3)))[1]
        assert len(gt.lesions) == n == sum(int(g) >= 2 for g in row["lesion_ISUP"].split(","))
        assert set(np.unique(delineation[delineation > 0])) <= {2, 3}
    code, text = _cli(["load", str(refs[1])])  # every verb takes a case reference through load_case
    assert code == 0 and f"case {refs[1].name}" in text and "axial T2 (t2w)" in text and "DWI_COMPUTED" in text
    case = load_case(refs[1])
    same = load_case(f"{refs[1]}_t2w.mha")
    assert case.case_id == same.case_id == refs[1].name
    assert case.roles_present() == ["T2", "ADC", "DWI_COMPUTED"] and list(case.dwi_computed) == [1400.0]
    t2 = sitk.ReadImage(f"{refs[1]}_t2w.mha")
    assert np.array_equal(sitk.GetArrayFromImage(case.t2), sitk.GetArrayFromImage(t2).astype(np.float32))
    zonal = sitk.GetArrayFromImage(sitk.ReadImage(str(next((archive / "picai_labels").rglob(f"zonal_pz_tz/*/*/{case.case_id}.nii.gz")))))
    zones = sitk.GetArrayFromImage(case.zones)
    assert zones.any() and np.array_equal(zones == 1, zonal == 2) and np.array_equal(zones == 2, zonal == 1)


def test_bad_references_and_marksheets_are_one_sentence(run, tmp_path):
    archive = run["archive"]
    with pytest.raises(CaseError, match="no such file"):
        load_case(archive / "images" / "10000" / "10000_9999999")
    bad = tmp_path / "bad"
    (bad / "picai_labels" / "clinical_information").mkdir(parents=True)
    (bad / "picai_labels" / "clinical_information" / "marksheet.csv").write_text("patient_id,study_id\n1,2\n")
    with pytest.raises(FormatError, match="case_ISUP"):
        read_ground_truth(bad)
    code, _ = _cli(["phantoms", "--format", "picai", "--n", "0", "--out", str(tmp_path / "none")])
    assert code == 2 and not (tmp_path / "none").exists()
    code, _ = _cli(["evaluate", "--detections", str(run["detections"]), "--ground-truth", str(archive), "--picai",
                    "--picai-maps", str(tmp_path), "--bootstrap", "0", "--out", str(tmp_path / "e")])
    assert code == 2 and not (tmp_path / "e").exists()


def test_detection_maps_are_what_picai_eval_reads(run):
    from picai_eval.analysis_utils import parse_detection_map

    for ref in run["refs"]:
        (case,) = read_detections(run["detections"] / ref.name / "detections.json").cases
        image = sitk.ReadImage(str(run["maps"] / f"{ref.name}_detection_map.nii.gz"))
        t2 = sitk.ReadImage(f"{ref}_t2w.mha")
        assert image.GetSize() == t2.GetSize() and np.allclose(image.GetOrigin(), t2.GetOrigin())
        values = sitk.GetArrayFromImage(image)
        summary = json.loads((run["maps"] / f"{ref.name}_likelihood.json").read_text())
        confidences, blobs = parse_detection_map(values)  # raises on anything but a detection map
        assert sorted(confidences.values(), reverse=True) == [c["likelihood"] for c in summary["candidates"]]
        candidates = [d for d in case.detections if d.ggg >= 2]
        assert candidates, f"{ref.name}: the demo detector found no GGG>=2 candidate"
        top = max(d.score for d in candidates)
        assert summary["likelihood"] == float(values.max()) == pytest.approx(top, abs=1e-6)
        probability = sitk.ReadImage(str(case.probability_map))
        by_id = {d.id: d for d in case.detections}
        for c in summary["candidates"]:
            region = values == np.float32(c["likelihood"])
            assert region.sum() == c["voxels"] and ndimage.label(region, structure=np.ones((3, 3, 3)))[1] == 1
            crop = detection_mask(by_id[c["detection_id"]], t2, sitk.GetArrayFromImage(probability))
            allowed = np.zeros(values.shape, bool)
            i, j, k = crop.lo
            allowed[k:k + crop.mask.shape[0], j:j + crop.mask.shape[1], i:i + crop.mask.shape[2]] = crop.mask
            assert not (region & ~allowed).any()  # a candidate lies inside its detection's lesion mask
        listed = len(summary["candidates"]) + len(summary["inside_higher_candidate"]) + len(summary["outside_grid"])
        assert listed == sum(d.score > 0 for d in candidates)


def test_both_evaluators_agree_where_their_definitions_coincide(run):
    metrics, scores = run["metrics"], run["scores"]
    picai = metrics["picai"]
    paper = metrics["GGG>=2"]["patient"]
    assert picai["n_cases"] == paper["n"] == N_CASES and picai["n_positive"] == paper["n_positive"]
    assert 0 < paper["n_positive"] < N_CASES
    assert picai["auroc"] == pytest.approx(paper["auc"], abs=1e-6)
    assert picai["agreement"]["difference"] <= 1e-6 and picai["agreement"]["same_cases"]
    for entry in scores["scores"]["GGG>=2"]["patient"]:
        assert picai["case_likelihood"][entry["case_id"]] == pytest.approx(entry["score"], abs=1e-6)
        assert picai["case_target"][entry["case_id"]] == int(entry["positive"])
    assert 0.0 <= picai["ap"] <= 1.0 and picai["score"] == pytest.approx((picai["auroc"] + picai["ap"]) / 2)
    froc = [picai["froc"][k] for k in ("0.125", "0.25", "0.5", "1", "2", "3")]
    assert froc == sorted(froc) and all(0.0 <= v <= 1.0 for v in froc)
    assert "## PI-CAI metrics (picai_eval, GGG>=2)" in run["report"]
    # the maps built in memory from the detections are the ones export --picai wrote
    from ProstateLesionCADLib.evaluation.detection_files import load_detections
    from ProstateLesionCADLib.evaluation.evaluate import pair_cases

    pairs = pair_cases(load_detections(run["detections"]), read_ground_truth(run["archive"]).ground_truth)[0]
    again = picai_metrics(pairs, delineations=True)
    for key in ("auroc", "ap", "froc", "case_likelihood", "case_target", "n_lesions"):
        assert again[key] == picai[key], key


def test_overlap_hits_and_distance_matching_differ_as_the_readme_says():
    """A candidate 10 mm from a lesion's centre without touching it: the paper's matching
    (centre within 15 mm) scores the lesion with it; picai_eval (overlap >= 0.1) counts a
    false positive and a missed lesion. The case scores, and so the AUROC, stay the same."""
    grid = sitk.Image([40, 40, 10], sitk.sitkUInt8)
    grid.SetSpacing((1.0, 1.0, 3.0))
    mask = sitk.GetArrayFromImage(grid)
    mask[4:6, 10:16, 10:16] = 1  # lesion around (12.5, 12.5, 13.5) mm
    truth = sitk.GetImageFromArray(mask)
    truth.CopyInformation(grid)
    lesion_centre = (12.5, 12.5, 13.5)
    near = Detection(1, 2, 0.8, (22.5, 12.5, 13.5), ((20.0, 10.0, 12.0), (25.0, 15.0, 15.0)))
    dmap = detection_map(DetectionCase("A", [near]), grid)
    assert len(dmap.candidates) == 1 and not (sitk.GetArrayFromImage(dmap.image) * mask).any()

    import tempfile
    from pathlib import Path

    from ProstateLesionCADLib.evaluation.lesion_matching import lesion_scores

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mask.nii.gz"
        sitk.WriteImage(truth, str(path))
        positive = GroundTruthCase("A", [Lesion(1, 2, lesion_centre, 1)], 2, path)
        negative = GroundTruthCase("B", [], 0, None)
        far = Detection(1, 2, 0.3, (5.0, 30.0, 13.5), ((3.0, 28.0, 12.0), (7.0, 32.0, 15.0)))
        pairs = [(positive, DetectionCase("A", [near])), (negative, DetectionCase("B", [far]))]
        with tempfile.TemporaryDirectory() as other:
            sitk.WriteImage(grid, str(Path(other) / "grid.nii.gz"))
            negative.lesion_mask = Path(other) / "grid.nii.gz"  # an empty mask on the same grid
            result = picai_metrics(pairs)
    (scored,) = lesion_scores(positive, pairs[0][1], 2)
    assert scored.detection_id == 1 and scored.score == pytest.approx(0.8)  # paper: matched by distance
    assert result["ap"] == 0.0 and result["froc"]["3"] == 0.0  # picai_eval: no overlap, no hit
    assert result["auroc"] == 1.0 and result["case_likelihood"] == {"A": pytest.approx(0.8), "B": pytest.approx(0.3)}


def test_overlapping_detections_become_separate_candidates():
    """Candidates never touch (picai_eval would merge them): a lower-scoring detection gives up the
    voxels next to a higher one, one inside a higher one disappears, and GGG<2 detections are none."""
    from picai_eval.analysis_utils import parse_detection_map

    grid = sitk.Image([30, 30, 10], sitk.sitkUInt8)
    grid.SetSpacing((1.0, 1.0, 3.0))
    high = Detection(1, 3, 0.9, (10.0, 10.0, 12.0), ((5.0, 5.0, 6.0), (15.0, 15.0, 18.0)))
    beside = Detection(2, 2, 0.5, (16.0, 10.0, 12.0), ((11.0, 5.0, 6.0), (21.0, 15.0, 18.0)))
    inside = Detection(3, 2, 0.3, (10.0, 10.0, 12.0), ((8.0, 8.0, 9.0), (12.0, 12.0, 15.0)))
    benign = Detection(4, 1, 0.95, (24.0, 24.0, 12.0), ((22.0, 22.0, 9.0), (26.0, 26.0, 15.0)))
    dmap = detection_map(DetectionCase("A", [inside, beside, high, benign]), grid)
    values = sitk.GetArrayFromImage(dmap.image)
    confidences, blobs = parse_detection_map(values)
    assert sorted(confidences.values(), reverse=True) == [pytest.approx(0.9), pytest.approx(0.5)]
    assert [c.detection_id for c in dmap.candidates] == [1, 2] and dmap.dropped == [3] and not dmap.outside
    first = ndimage.binary_dilation(values == np.float32(0.9), structure=np.ones((3, 3, 3)))
    assert not (first & (values == np.float32(0.5))).any()  # a gap of one voxel at least
    full = detection_mask(high, grid).mask
    assert (values == np.float32(0.9)).sum() == full.sum()  # the highest keeps its whole mask
    assert dmap.likelihood == pytest.approx(0.9)


def test_ground_truth_covers_the_studies_present(run, tmp_path):
    """The public marksheet lists every study; an archive with some folds is judged on those only,
    a labels-only folder on every marksheet row."""
    import shutil

    archive = run["archive"]
    partial = tmp_path / "partial"
    shutil.copytree(archive / "picai_labels", partial / "picai_labels")
    labels_only = [c.case_id for c in read_ground_truth(partial).ground_truth.cases]
    assert labels_only == [ref.name for ref in run["refs"]]
    for ref in run["refs"][:2]:
        (partial / "images" / ref.parent.name).mkdir(parents=True)
        shutil.copy(f"{ref}_t2w.mha", partial / "images" / ref.parent.name)
    assert [c.case_id for c in read_ground_truth(partial).ground_truth.cases] == [r.name for r in run["refs"][:2]]
    # export --picai on the case named by its _t2w.mha file, written as MHA: the same map
    code, text = _cli(["export", f"{run['refs'][0]}_t2w.mha", "--detections",
                       str(run["detections"] / run["refs"][0].name / "detections.json"), "--picai",
                       "--picai-suffix", ".mha", "--out", str(tmp_path / "maps")])
    assert code == 0, text
    mha = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "maps" / f"{run['refs'][0].name}_detection_map.mha")))
    nii = sitk.GetArrayFromImage(sitk.ReadImage(str(run["maps"] / f"{run['refs'][0].name}_detection_map.nii.gz")))
    assert np.array_equal(mha, nii)


def test_delineation_lesions_are_centred_on_their_box_as_every_ground_truth_is():
    """An L-shaped delineation: its centre of mass lies off its bounding box's middle; the lesion
    is centred on the box, as `grow` centres the project's own ground truth (matching within
    15 mm measures from there), with the grade of its highest label."""
    from ProstateLesionCADLib.study.picai_archive import delineation_lesions

    values = np.zeros((6, 20, 20), np.uint8)
    values[1:3, 2:12, 2:4] = 2  # the L's long bar ...
    values[1:3, 10:12, 2:16] = 3  # ... and its foot, graded higher
    values[4, 17:19, 17:19] = 2  # a second, separate lesion
    label = sitk.GetImageFromArray(values)
    label.SetSpacing((0.5, 0.5, 3.0))
    label.SetOrigin((-5.0, -5.0, 10.0))
    lesions = delineation_lesions(label)
    assert [(x.id, x.ggg) for x in lesions] == [(1, 3), (2, 2)]
    box_middle = label.TransformContinuousIndexToPhysicalPoint((8.5, 6.5, 1.5))  # x 2..15, y 2..11, z 1..2
    mass = ndimage.center_of_mass(values[:3] > 0)[::-1]
    assert np.allclose(lesions[0].center_lps, box_middle)
    assert not np.allclose(lesions[0].center_lps, label.TransformContinuousIndexToPhysicalPoint(mass), atol=0.5)
    assert np.allclose(lesions[1].center_lps, label.TransformContinuousIndexToPhysicalPoint((17.5, 17.5, 4.0)))
