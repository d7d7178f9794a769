"""Exchange formats, model packages, staged outputs and the CLI envelope."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ProstateLesionCADLib import formats
from ProstateLesionCADLib.models import package as model_package
from ProstateLesionCADLib.errors import FormatError, ModelError
from ProstateLesionCADLib.output_files import staged_output_dir
from ProstateLesionCADLib.progress import ConsoleProgress, parse_progress_line, sub_progress


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_detections_round_trip_keeps_values_and_relative_paths(tmp_path):
    dset = formats.DetectionSet(
        cases=[formats.DetectionCase("P1", [formats.Detection(1, 2, 0.41, (1.0, 2.0, 3.0), ((0, 1, 2), (3, 4, 5)),
                                                              {"0": 0.1, "2": 0.41})],
                                     probability_map=tmp_path / "P1" / "lesion-probability.nrrd")],
        model={"name": "demo", "version": "1"})
    out = tmp_path / "detections.json"
    formats.write_detections(dset, out)
    raw = json.loads(out.read_text())
    assert raw["format"] == "prostate-cad-detections/1"
    assert raw["cases"][0]["probability_map"] == "P1/lesion-probability.nrrd"
    back = formats.read_detections(out)
    det = back.cases[0].detections[0]
    assert (det.ggg, det.score, det.center_lps) == (2, 0.41, (1.0, 2.0, 3.0))
    assert back.cases[0].probability_map == tmp_path / "P1" / "lesion-probability.nrrd"
    assert back.model == {"name": "demo", "version": "1"}


def test_ground_truth_reader_maps_ggg4_5_to_3_and_ignores_unknown_keys(tmp_path):
    path = _write(tmp_path / "gt.json", {"format": "prostate-cad-ground-truth/1", "extra": 1, "cases": [
        {"case_id": "A", "patient_ggg": 5, "unknown": True,
         "lesions": [{"id": 1, "ggg": 4, "center_lps": [0, 0, 0], "label": 1, "note": "x"}]}]})
    gt = formats.read_ground_truth(path)
    assert gt.cases[0].patient_ggg == 3 and gt.cases[0].lesions[0].ggg == 3


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"format": "prostate-cad-detections/9", "cases": []}', "unknown format"),
    ('{"format": "prostate-cad-detections/1", "cases": [{"case_id": "A", "detections": [{"score": 1, "ggg": 1}]}]}',
     "needs 'center_lps'"),
    ('{"format": "prostate-cad-detections/1", "cases": [{"case_id": "A", "detections": '
     '[{"score": 1, "ggg": 7, "center_lps": [0,0,0]}]}]}', "GGG class"),
])
def test_bad_detection_files_give_one_clear_sentence(tmp_path, content, message):
    path = tmp_path / "d.json"
    path.write_text(content)
    with pytest.raises(FormatError, match=message) as info:
        formats.read_detections(path)
    assert str(path) in str(info.value)


def test_model_package_checksum_detects_corruption(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"0123456789")
    model_package.write_model_card(tmp_path, {"name": "m", "version": "1", "task": "detector",
                                              "intended_use": "test"}, ["weights.pt"])
    pkg = model_package.load_model_package(tmp_path)
    assert pkg.card["files"][0]["bytes"] == 10
    (tmp_path / "weights.pt").write_bytes(b"0123456780")
    with pytest.raises(ModelError, match="sha256"):
        model_package.load_model_package(tmp_path)


def test_staged_output_leaves_nothing_on_failure_and_keeps_user_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user")
    with pytest.raises(RuntimeError):
        with staged_output_dir(out, keep_other_files=True) as stage:
            (stage / "half.nrrd").write_text("x")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    with staged_output_dir(out, keep_other_files=True) as stage:
        (stage / "sub").mkdir()
        (stage / "sub" / "a.json").write_text("{}")
    assert (out / "sub" / "a.json").is_file() and (out / "mine.txt").read_text() == "user"


def test_atomic_file_gets_the_usual_mode(tmp_path):
    import os
    from ProstateLesionCADLib.output_files import atomic_file

    with atomic_file(tmp_path / "a.json") as handle:
        handle.write("{}")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_progress_lines_parse_back(capsys):
    progress = ConsoleProgress()
    sub_progress(progress, 0.5, 1.0)(0.5, "half of the second half")
    captured = capsys.readouterr()
    line = captured.err.strip()  # stderr: stdout holds results only
    assert captured.out == "" and parse_progress_line(line) == (75.0, "half of the second half")
    assert parse_progress_line("something else") is None


def test_cli_lists_discovered_verbs():
    proc = subprocess.run([sys.executable, "-m", "ProstateLesionCADLib", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "bench" in proc.stdout
