"""`prostate-cad detect` over several cases (`batch`): a folder of studies with three demo
phantoms and one broken case runs every good case into <out>/<case>/, records the broken one
with its error, prints the table and exits 2; a second run skips the finished cases (their
files untouched) and retries the broken one; list files and several paths name cases too;
a DICOM study with series subfolders stays one case while a folder of DICOM studies is a batch."""

from __future__ import annotations

import json
import shutil

import pytest
import SimpleITK as sitk

from ProstateLesionCADLib import cli
from ProstateLesionCADLib.batch import (FAILED, SKIPPED, BatchCase, discover_cases, is_finished, is_single_case)
from ProstateLesionCADLib.demo.detector_model import DEMO_NAME, demo_phantom
from ProstateLesionCADLib.errors import ParameterError
from ProstateLesionCADLib.formats import read_detections
from ProstateLesionCADLib.phantoms.generate import write_phantom

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GOOD = ["Batch-A", "Batch-B", "Batch-C"]
BROKEN = "Batch-Broken"
OPTIONS = ["--model", DEMO_NAME, "--no-register", "--device", "cpu"]


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """A folder of studies: three phantoms (case.json folders) and one whose T2 file is garbage."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    root = tmp_path_factory.mktemp("studies")
    for i, name in enumerate(GOOD):
        write_phantom(demo_phantom(9100 + i, case_id=name, ggg=[3]), root / name)
    shutil.copytree(root / GOOD[0], root / BROKEN)
    (root / BROKEN / "t2.nrrd").write_bytes(b"NRRD0004\nthis is not an image\n")
    return root


@pytest.fixture(scope="module")
def first_run(studies, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "out"
    with pytest.MonkeyPatch.context() as mp:
        import contextlib
        import io

        stdout, stderr = io.StringIO(), io.StringIO()
        mp.setattr("sys.stdout", stdout)
        mp.setattr("sys.stderr", stderr)
        with contextlib.ExitStack():
            code = cli.main(["detect", str(studies), "--out", str(out), *OPTIONS])
    return code, out, stdout.getvalue(), stderr.getvalue()


def _table_rows(stdout: str) -> dict[str, list[str]]:
    """The table's rows by case, cut at the header's column starts."""
    lines = stdout.splitlines()
    head = lines[0]
    assert head.split() == ["case", "status", "detections", "seconds", "error"]
    starts = [head.index(column) for column in head.split()] + [None]
    rows = [[line[a:b].strip() for a, b in zip(starts, starts[1:])] for line in lines[1:-1]]
    return {row[0]: row for row in rows}


def test_a_folder_of_studies_runs_every_case_and_reports_the_broken_one(first_run, studies):
    code, out, stdout, stderr = first_run
    assert code == 2
    rows = _table_rows(stdout)
    assert sorted(rows) == sorted(GOOD + [BROKEN])
    for name in GOOD:
        assert rows[name][1] == "done"
        found = read_detections(out / name / "detections.json").cases[0]
        assert found.case_id == name and int(rows[name][2]) == len(found.detections) > 0
        assert found.probability_map.is_file() and float(rows[name][3]) > 0
        assert is_finished(out / name)
    assert rows[BROKEN][1] == FAILED and "t2.nrrd" in rows[BROKEN][4]
    assert not (out / BROKEN).exists()  # nothing half-written
    assert stdout.splitlines()[-1] == "4 cases: 3 done, 0 skipped (finished before), 1 failed"
    # progress and the error on stderr only, progress numbered case i/N
    assert "PROGRESS" not in stdout and "error: 1 of 4 cases failed" in stderr
    assert all(f"case {i}/4 " in stderr for i in (1, 2, 3, 4))


def test_a_second_run_skips_finished_cases_and_retries_the_broken_one(first_run, studies, tmp_path, capsys):
    _, out, _, _ = first_run
    times = {name: (out / name / "detections.json").stat().st_mtime_ns for name in GOOD}
    # a case whose detections.json is damaged is not finished: it runs again
    resumed = tmp_path / "out"
    shutil.copytree(out, resumed)
    (resumed / GOOD[1] / "detections.json").write_text("{not json")
    assert not is_finished(resumed / GOOD[1])
    code = cli.main(["detect", str(studies), "--out", str(resumed), "--json", *OPTIONS])
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert code == 2 and summary["format"] == "prostate-cad-batch/1"
    status = {c["case"]: c["status"] for c in summary["cases"]}
    assert status == {GOOD[0]: SKIPPED, GOOD[1]: "done", GOOD[2]: SKIPPED, BROKEN: FAILED}
    assert summary["counts"] == {"done": 1, "skipped": 2, "failed": 1}
    assert all(c["detections"] > 0 for c in summary["cases"] if c["status"] != FAILED)
    assert is_finished(resumed / GOOD[1])
    assert {name: (out / name / "detections.json").stat().st_mtime_ns for name in GOOD} == times
    # one detections file of every finished case, for `evaluate`
    cohort = read_detections(resumed / "detections.json")
    assert [c.case_id for c in cohort.cases] == GOOD and cohort.model["name"] == DEMO_NAME
    assert [c.probability_map for c in cohort.cases] == [resumed / name / "lesion-probability.nrrd" for name in GOOD]


def test_list_files_and_several_paths_name_cases(first_run, studies, tmp_path, capsys):
    _, out, _, _ = first_run
    listing = tmp_path / "cases.txt"
    listing.write_text(f"# two finished cases\n{studies / GOOD[0]}\n\n{studies / GOOD[2] / 'case.json'}\n")
    assert [c.name for c in discover_cases([listing])] == [GOOD[0], GOOD[2]]
    assert cli.main(["detect", str(listing), "--out", str(out), "-q", *OPTIONS]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and [r[1] for r in _table_rows(captured.out).values()] == [SKIPPED, SKIPPED]
    cases = discover_cases([studies / GOOD[0], studies / GOOD[1]])
    assert [(c.name, c.source) for c in cases] == [(GOOD[0], studies / GOOD[0]), (GOOD[1], studies / GOOD[1])]
    with pytest.raises(ParameterError, match="would both write to the output folder"):
        discover_cases([studies / GOOD[0], listing])
    assert cli.main(["detect", str(studies / GOOD[0]), str(studies / GOOD[1]), "--out", str(out),
                     "--zones", str(studies / GOOD[0] / "zones.nrrd"), *OPTIONS]) == 2
    assert "--zones name one case's files" in capsys.readouterr().err


def test_each_cases_detections_file_is_read_once(first_run, studies, tmp_path, monkeypatch, capsys):
    """A batch reads a skipped case's detections.json once (finished? count, cohort file) and a
    case it runs once (the cohort file)."""
    from collections import Counter

    from ProstateLesionCADLib import formats

    _, out, _, _ = first_run
    resumed = tmp_path / "out"
    shutil.copytree(out, resumed)
    shutil.rmtree(resumed / GOOD[1])
    reads: Counter = Counter()
    real = formats.read_detections

    def counting(path, *args, **kwargs):
        reads[str(path)] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(formats, "read_detections", counting)
    listing = tmp_path / "cases.txt"
    listing.write_text("\n".join(str(studies / name) for name in GOOD) + "\n")
    assert cli.main(["detect", str(listing), "--out", str(resumed), "-q", *OPTIONS]) == 0
    assert [r[1] for r in _table_rows(capsys.readouterr().out).values()] == [SKIPPED, "done", SKIPPED]
    assert reads == Counter({str(resumed / name / "detections.json"): 1 for name in GOOD})
    cohort = real(resumed / "detections.json")
    assert [c.case_id for c in cohort.cases] == GOOD


@pytest.mark.extended
def test_dicom_study_with_series_subfolders_is_one_case_and_a_folder_of_them_a_batch(prostatex_0218_dir):
    prostatex_dir = prostatex_0218_dir.parent  # the data folder holding both studies
    assert is_single_case([prostatex_dir / "ProstateX-0000"])  # series in subfolders, one StudyInstanceUID
    assert not is_single_case([prostatex_dir])
    cases = discover_cases([prostatex_dir])
    assert [c.name for c in cases] == ["ProstateX-0000", "ProstateX-0218"]
    assert all(isinstance(c, BatchCase) and c.source.parent == prostatex_dir for c in cases)
