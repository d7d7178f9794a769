"""Outputs are all or nothing, never replace a user's files unasked, and have one writer at a time
(output_files.py): through the real command line, with real folders, files and processes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ProstateLesionCADLib import cli
from ProstateLesionCADLib.formats import (Detection, DetectionCase, DetectionSet, GroundTruthCase, GroundTruthSet,
                                          Lesion, write_detections, write_ground_truth)
from ProstateLesionCADLib.output_files import OutputError, staged_output_dir


def _inputs(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    gt, dets = folder / "gt.json", folder / "dets.json"
    write_ground_truth(GroundTruthSet([GroundTruthCase("A", [Lesion(1, 3, (0.0, 0.0, 0.0))], patient_ggg=3),
                                       GroundTruthCase("B", [])]), gt)
    write_detections(DetectionSet([DetectionCase("A", [Detection(1, 3, 0.8, (1.0, 0.0, 0.0))]),
                                   DetectionCase("B", [Detection(1, 2, 0.3, (9.0, 9.0, 9.0))])]), dets)
    return gt, dets


def _evaluate(gt: Path, dets: Path, out, *extra) -> list[str]:
    return ["evaluate", "--detections", str(dets), "--ground-truth", str(gt), "--out", str(out), "--bootstrap", "0",
            "--no-dice", *map(str, extra)]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(capsys, argv, *words) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_non_empty_folder_is_refused_without_overwrite_and_replaced_whole_with_it(tmp_path, capsys):
    gt, dets = _inputs(tmp_path / "in")
    out = tmp_path / "runs" / "eval"
    assert cli.main(_evaluate(gt, dets, out)) == 0
    capsys.readouterr()
    (out / "my-notes.txt").write_text("mine")
    before = _snapshot(out)
    _refused(capsys, _evaluate(gt, dets, out), str(out), "not empty", "--overwrite")
    assert _snapshot(out) == before and _hidden(out.parent) == []
    assert cli.main(_evaluate(gt, dets, out, "--overwrite")) == 0  # old folder aside, new in, old deleted
    assert not (out / "my-notes.txt").exists() and (out / "metrics.json").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["eval"]
    # an empty folder is simply filled
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(_evaluate(gt, dets, empty)) == 0 and (empty / "metrics.json").is_file()


def test_a_file_in_the_way_or_a_folder_that_cannot_be_written_is_one_sentence(tmp_path, capsys):
    gt, dets = _inputs(tmp_path / "in")
    afile = tmp_path / "results.txt"
    afile.write_text("keep me")
    _refused(capsys, _evaluate(gt, dets, afile), str(afile), "is a file")
    _refused(capsys, _evaluate(gt, dets, afile / "sub"), "is a file")
    assert afile.read_text() == "keep me"
    _refused(capsys, _evaluate(gt, dets, "/proc/prostate-cad-out"), "/proc/prostate-cad-out", "cannot be")
    assert _hidden(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["in", "results.txt"]


def test_a_failure_in_the_middle_of_publishing_leaves_the_old_contents(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    # The staging folder vanishes before it is renamed in: the old folder, already moved
    # aside, must come back.
    with pytest.raises(OutputError, match="previous contents are unchanged"):
        with staged_output_dir(out, overwrite=True) as stage:
            (stage / "new.txt").write_text("new")
            shutil.rmtree(stage)
    assert _snapshot(out) == {"old.txt": b"old"} and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # the same when adding files to a user's folder
    with pytest.raises(OutputError):
        with staged_output_dir(out, overwrite=True, keep_other_files=True) as stage:
            (stage / "old.txt").write_text("new")
            shutil.rmtree(stage)
    assert _snapshot(out) == {"old.txt": b"old"} and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # a full disk while writing (Linux's /dev/full answers every write with ENOSPC): one sentence, old contents kept
    if Path("/dev/full").exists():
        with pytest.raises(OutputError, match="no space left on device"):
            with staged_output_dir(out, overwrite=True) as stage:
                (stage / "new.txt").write_text("new")
                with open("/dev/full", "w") as full:
                    full.write("x" * 100_000)
                    full.flush()
        assert _snapshot(out) == {"old.txt": b"old"} and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # an exception in the writer: nothing published, nothing left beside
    with pytest.raises(RuntimeError):
        with staged_output_dir(tmp_path / "new" / "deeper") as stage:
            (stage / "half.nrrd").write_text("x")
            raise RuntimeError("writer failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_grow_into_the_case_folder_keeps_the_case_and_asks_before_replacing_its_annotation(tmp_path, repo_dir,
                                                                                           capsys):
    case = tmp_path / "case"
    shutil.copytree(repo_dir / "Resources" / "Sample" / "ProstateX-0000", case)
    seeds = tmp_path / "seeds.csv"
    seeds.write_text("x,y,z,ggg\n" + _sample_seed(case) + ",2\n")
    before = _snapshot(case)
    _refused(capsys, ["grow", str(case), "--seeds", str(seeds), "--out", str(case)], "ground-truth.json",
             "--overwrite")
    assert _snapshot(case) == before and _hidden(tmp_path) == []
    assert cli.main(["grow", str(case), "--seeds", str(seeds), "--out", str(case), "--overwrite"]) == 0
    after = _snapshot(case)
    replaced = {"ground-truth.json"}
    assert {k: v for k, v in after.items() if k not in replaced | {"lesions.nrrd", "grow.json"}} == \
        {k: v for k, v in before.items() if k not in replaced}  # the images and case.json are untouched
    assert after["ground-truth.json"] != before["ground-truth.json"] and "lesions.nrrd" in after
    assert _hidden(tmp_path) == []


def _sample_seed(case: Path) -> str:
    from ProstateLesionCADLib.formats import read_ground_truth

    lesion = read_ground_truth(case / "ground-truth.json").cases[0].lesions[0]
    return ",".join(f"{v:.2f}" for v in lesion.center_lps)


def test_phantoms_into_an_existing_set_is_refused(tmp_path, capsys):
    out = tmp_path / "set"
    argv = ["phantoms", "--n", "2", "--seed", "3", "--out", str(out), "--size", "64", "--slices", "12", "--no-dce",
            "--no-ktrans"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    before = _snapshot(out)
    _refused(capsys, argv[:2] + ["1"] + argv[3:], "not empty")
    assert _snapshot(out) == before


def test_a_second_writer_to_the_same_folder_is_refused(tmp_path, capsys):
    gt, dets = _inputs(tmp_path / "in")
    out = tmp_path / "eval"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from ProstateLesionCADLib.output_files import staged_output_dir
        with staged_output_dir({str(out)!r}) as stage:
            print("writing", flush=True)
            sys.stdin.readline()
            (stage / "theirs.txt").write_text("first writer")
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "writing"
        err = _refused(capsys, _evaluate(gt, dets, out), "another process", f"pid {holder.pid}")
        assert "lock" in err
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(60) == 0
    finally:
        holder.kill()
    assert _snapshot(out) == {"theirs.txt": b"first writer"} and _hidden(tmp_path) == []
    # a lock left by a process that has ended is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".eval2.lock").write_text(dead.stdout)
    assert cli.main(_evaluate(gt, dets, tmp_path / "eval2")) == 0
    assert (tmp_path / "eval2" / "metrics.json").is_file() and _hidden(tmp_path) == []


WRITING_VERBS = {  # argv with {out}; the inputs need not exist: the output folder is checked first
    "detect": ["detect", "case", "--model", "m", "--out", "{out}"],
    "register": ["register", "case", "--out", "{out}"],
    "zones": ["zones", "case", "--out", "{out}"],
    "preprocess": ["preprocess", "case", "--out", "{out}"],
    "evaluate": ["evaluate", "--detections", "d.json", "--ground-truth", "g.json", "--out", "{out}"],
    "export": ["export", "case", "--out", "{out}"],
    "grow": ["grow", "case", "--seeds", "s.csv", "--out", "{out}"],
    "phantoms": ["phantoms", "--out", "{out}"],
    "demo": ["demo", "--out", "{out}"],
    "bench": ["bench", "--out", "{out}"],
    "load --export": ["load", "case", "--export", "{out}"],
    "train detector": ["train", "detector", "--data", "d", "--ground-truth", "g", "--split", "s", "--out", "{out}"],
    "train zones": ["train", "zones", "--images", "a", "--labels", "b", "--out", "{out}"],
    "train focalnet": ["train", "focalnet", "--phantoms", "2", "--out", "{out}"],
    "models import-mdt": ["models", "import-mdt", "exp", "--out", "{out}"],
    "models fetch-published": ["models", "fetch-published", "--out", "{out}"],
}
ADDED_FILE = {"export": "segmentation.dcm", "grow": "ground-truth.json"}  # verbs adding files to a user's folder


@pytest.mark.parametrize("verb", list(WRITING_VERBS))
def test_every_writing_verb_refuses_earlier_results_before_any_work(tmp_path, capsys, verb):
    out = tmp_path / "out"
    out.mkdir()
    (out / ADDED_FILE.get(verb, "earlier-result.json")).write_text("earlier")
    argv = [a.replace("{out}", str(out)) for a in WRITING_VERBS[verb]]
    _refused(capsys, argv, str(out), "--overwrite")
    assert _snapshot(out) == {ADDED_FILE.get(verb, "earlier-result.json"): b"earlier"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert cli.build_parser().parse_args(argv + ["--overwrite"]).overwrite is True
