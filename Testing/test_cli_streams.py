"""What the command line writes where: results on stdout, progress and notes on stderr (which
the Slicer runner reads), -q and -v, --json that parses, and --format for the probability map
(an MHA / NIfTI map holds the same voxels and geometry as the NRRD one and detections.json
names it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib import cli
from ProstateLesionCADLib.demo.detector_model import DEMO_NAME, demo_phantom
from ProstateLesionCADLib.formats import read_detections
from ProstateLesionCADLib.image_files import read_image_file, with_format
from ProstateLesionCADLib.errors import ParameterError
from ProstateLesionCADLib.phantoms.generate import write_phantom
from ProstateLesionCADLib.progress import parse_progress_line

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ProstateLesionCAD"))

from ProstateLesionCADSlicer.background_process import SUCCEEDED, ProcessRunner, cli_command  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OPTIONS = ["--model", DEMO_NAME, "--no-register", "--device", "cpu"]


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    return write_phantom(demo_phantom(9200, case_id="Streams-9200", ggg=[3]), tmp_path_factory.mktemp("c") / "case")


@pytest.fixture(scope="module")
def runs(case_dir, tmp_path_factory):
    """The same case detected three times: plain NRRD, -q with MHA and --json, -v with NIfTI."""
    root = tmp_path_factory.mktemp("streams")
    argvs = {"nrrd": ["detect", str(case_dir), "--out", str(root / "nrrd"), *OPTIONS],
             "mha": ["-q", "detect", str(case_dir), "--out", str(root / "mha"), "--format", "mha", "--json", *OPTIONS],
             "nii": ["detect", str(case_dir), "--out", str(root / "nii"), "--format", "nii.gz", "-v", *OPTIONS]}
    found = {}
    with pytest.MonkeyPatch.context() as mp:
        import io

        for name, argv in argvs.items():
            out, err = io.StringIO(), io.StringIO()
            mp.setattr("sys.stdout", out)
            mp.setattr("sys.stderr", err)
            code = cli.main(argv)
            found[name] = (code, root / name, out.getvalue(), err.getvalue())
    return found


def test_stdout_holds_the_result_and_stderr_the_progress(runs):
    code, out, stdout, stderr = runs["nrrd"]
    assert code == 0
    assert stdout.splitlines() == [f"{len(read_detections(out / 'detections.json').cases[0].detections)} detections "
                                   f"({DEMO_NAME} 1) written to {out}"]
    lines = stderr.splitlines()
    progress = [parse_progress_line(line) for line in lines if parse_progress_line(line)]
    assert len(progress) > 5 and progress[-1][0] == 100.0
    assert all(parse_progress_line(line) or line.startswith("note: ") for line in lines)
    assert not any(line.startswith("detail: ") for line in lines)


def test_quiet_prints_results_only_and_json_parses(runs):
    code, out, stdout, stderr = runs["mha"]
    assert code == 0 and stderr == ""
    summary = json.loads(stdout)
    assert summary["format"] == "prostate-cad-batch/1" and summary["model"]["name"] == DEMO_NAME
    [case] = summary["cases"]
    assert case["status"] == "done" and case["out"] == str(out)
    assert case["detections"] == len(read_detections(out / "detections.json").cases[0].detections)


def test_verbose_adds_details_after_the_verb_too(runs):
    code, _, _, stderr = runs["nii"]
    assert code == 0
    details = [line for line in stderr.splitlines() if line.startswith("detail: ")]
    assert [d.split(":")[1].strip() for d in details] == ["zones", "registration", "preprocessing", "detection",
                                                            "outputs"]


@pytest.mark.parametrize("name, suffix", [("mha", ".mha"), ("nii", ".nii.gz")])
def test_format_writes_the_probability_map_in_that_format_and_json_names_it(runs, name, suffix):
    reference = read_detections(runs["nrrd"][1] / "detections.json").cases[0]
    out = runs[name][1]
    found = read_detections(out / "detections.json").cases[0]
    assert sorted(p.name for p in out.iterdir()) == sorted(["detections.json", "lesion-probability" + suffix])
    assert found.probability_map == out / ("lesion-probability" + suffix)
    assert json.loads((out / "detections.json").read_text())["cases"][0]["probability_map"] == \
        "lesion-probability" + suffix
    assert [d.score for d in found.detections] == [d.score for d in reference.detections]
    a, b = sitk.ReadImage(str(reference.probability_map)), sitk.ReadImage(str(found.probability_map))
    assert b.GetPixelID() == sitk.sitkFloat32 and a.GetSize() == b.GetSize()
    assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4) and np.allclose(a.GetSpacing(), b.GetSpacing())
    assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)
    assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    read_image_file(found.probability_map, "probability map")  # the project's reader takes it


def test_format_names_and_refusals():
    assert with_format("lesion-probability.nrrd", "mha") == "lesion-probability.mha"
    assert with_format("zones.nii.gz", "nrrd") == "zones.nrrd" and with_format("t2.mha", "nii.gz") == "t2.nii.gz"
    with pytest.raises(ParameterError, match="'png' is not one of nrrd, nii.gz, mha"):
        with_format("a.nrrd", "png")


def test_evaluate_and_models_list_json(runs, case_dir, tmp_path, capsys):
    detections = runs["nrrd"][1] / "detections.json"
    assert cli.main(["evaluate", "--detections", str(detections), "--ground-truth", str(case_dir / "ground-truth.json"),
                     "--out", str(tmp_path / "eval"), "--bootstrap", "0", "--no-dice", "--json"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert metrics == json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["format"].startswith("prostate-cad-metrics/")
    assert "PROGRESS" not in captured.out
    assert cli.main(["-q", "models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(row["name"] == DEMO_NAME for row in rows)


def test_errors_stay_on_stderr_when_quiet(tmp_path, capsys):
    assert cli.main(["detect", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "-q", *OPTIONS]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and "no such file" in captured.err


def test_the_slicer_runner_reads_progress_from_stderr_of_the_real_command(tmp_path):
    runner = ProcessRunner()
    runner.start("phantoms", lambda work: cli_command("phantoms", ["--n", "1", "--size", "48", "--slices", "8",
                                                                   "--no-dce", "--out", str(work / "out")],
                                                      python=sys.executable))
    update = runner.wait(120)
    try:
        assert update.state == SUCCEEDED, update.log
        assert update.percent == 100.0 and (update.out_dir / "ground-truth.json").is_file()
        assert any(parse_progress_line(line) for line in update.log)
        assert update.log[-1].startswith("1 phantoms written to ")  # the result, after the progress
    finally:
        update.cleanup()


def test_zones_and_grow_write_their_label_maps_in_the_format_asked(case_dir, tmp_path, capsys):
    from ProstateLesionCADLib.formats import read_ground_truth

    assert cli.main(["-q", "zones", str(case_dir / "t2.nrrd"), "--backend", "cascade", "--format", "nii.gz",
                     "--out", str(tmp_path / "z")]) == 0
    report = json.loads((tmp_path / "z" / "zones.json").read_text())
    assert report["label_map"] == "zones.nii.gz" and sorted(p.name for p in (tmp_path / "z").iterdir()) == \
        ["zones.json", "zones.nii.gz"]
    zones = read_image_file(tmp_path / "z" / "zones.nii.gz", "zones", label=True)
    assert set(np.unique(sitk.GetArrayFromImage(zones))) == {0, 1, 2}
    assert cli.main(["-q", "grow", str(case_dir), "--seeds", str(case_dir / "ground-truth.json"), "--format", "mha",
                     "--out", str(tmp_path / "g")]) == 0
    truth = read_ground_truth(tmp_path / "g" / "ground-truth.json").cases[0]
    assert truth.lesion_mask == tmp_path / "g" / "lesions.mha" and not (tmp_path / "g" / "lesions.nrrd").exists()
    mask = sitk.ReadImage(str(truth.lesion_mask))
    assert mask.GetPixelID() == sitk.sitkUInt16 and sitk.GetArrayFromImage(mask).max() == len(truth.lesions)
    assert capsys.readouterr().err == ""  # -q: nothing on stderr
