"""Catalogue of bad inputs through the real command line: each is refused with exit status 2
and one sentence naming the file (or option) and the problem, no traceback, and nothing is
written next to what the output folder's parent already held.

Bad studies are made by editing one image of a tiny phantom (README "Bad input").
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib import cli

REPO = Path(__file__).resolve().parents[1]
DETECTOR = REPO / "Resources" / "Models" / "demo-retina-unet-phantoms"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    """One NRRD phantom case (64x64x12 T2, no DCE) with its lesions."""
    out = tmp_path_factory.mktemp("bad-inputs") / "set"
    assert cli.main(["phantoms", "--n", "1", "--seed", "3", "--size", "64", "--slices", "12", "--no-dce",
                     "--out", str(out)]) == 0
    (case,) = [p for p in out.iterdir() if (p / "case.json").is_file()]
    return case


def _variant(phantom: Path, tmp_path: Path, name: str, edit=None, file: str = "t2.nrrd") -> Path:
    """A copy of the phantom case with `edit(image) -> image` applied to `file`."""
    case = tmp_path / name
    shutil.copytree(phantom, case)
    if edit is not None:
        image = sitk.ReadImage(str(case / file), sitk.sitkFloat32)
        sitk.WriteImage(edit(image), str(case / file))
    if file == "t2.nrrd" and edit is not None:  # the masks on the T2 grid would be refused first
        data = json.loads((case / "case.json").read_text())
        data.pop("prostate", None)
        data.pop("zones", None)
        (case / "case.json").write_text(json.dumps(data))
    return case


def _with_array(image: sitk.Image, change) -> sitk.Image:
    array = sitk.GetArrayFromImage(image)
    change(array)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def _refused(capsys, argv: list[str], *names: str, out: Path | None = None) -> str:
    """Run `prostate-cad argv`: exit 2, one 'error:' sentence naming each of `names`, and
    the parent of `out` holds exactly what it held before (no output, no staging folder)."""
    before = None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        (out.parent / "keep.txt").write_text("earlier results\n")
        before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    capsys.readouterr()
    code = cli.main(["-q", *map(str, argv)])  # quiet: stderr holds the error alone, no progress lines
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, f"{argv}: exit {code}\n{captured.err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    message = lines[0]
    assert message.rstrip().endswith("."), message
    for name in names:
        assert str(name) in message, f"{name!r} not in {message!r}"
    if out is not None:
        assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == before, list(out.parent.iterdir())
    return message


def test_bad_images_are_refused_by_every_verb_that_loads_a_case(phantom, tmp_path, capsys):
    nan_t2 = _variant(phantom, tmp_path, "nan-t2", lambda im: _with_array(im, lambda a: a.__setitem__((0, 0, 0), np.nan)))
    t2 = nan_t2 / "t2.nrrd"
    why = "1 voxel that is not a finite number"
    _refused(capsys, ["load", nan_t2], t2, why)
    _refused(capsys, ["preprocess", nan_t2, "--out", tmp_path / "o1" / "out"], t2, why, out=tmp_path / "o1" / "out")
    _refused(capsys, ["register", nan_t2, "--out", tmp_path / "o2" / "out", "--preset", "fast"], t2, why,
             out=tmp_path / "o2" / "out")
    _refused(capsys, ["zones", nan_t2, "--out", tmp_path / "o3" / "out", "--backend", "cascade"], t2, why,
             out=tmp_path / "o3" / "out")
    _refused(capsys, ["zones", t2, "--out", tmp_path / "o4" / "out", "--backend", "cascade"], t2, why,
             out=tmp_path / "o4" / "out")
    _refused(capsys, ["grow", nan_t2, "--seeds", nan_t2 / "ground-truth.json", "--out", tmp_path / "o5" / "out"],
             t2, why, out=tmp_path / "o5" / "out")
    _refused(capsys, ["detect", nan_t2, "--model", DETECTOR, "--out", tmp_path / "o6" / "out"], t2, why,
             out=tmp_path / "o6" / "out")


def _shifted(image: sitk.Image, mm: float) -> sitk.Image:
    out = sitk.Image(image)
    origin = list(out.GetOrigin())
    origin[0] += mm
    out.SetOrigin(origin)
    return out


def _sagittal_beside(image: sitk.Image) -> sitk.Image:
    """The ADC voxels relabelled as a sagittal slab 150 mm to the patient's left of the gland."""
    out = sitk.Image(image)
    out.SetDirection((0, 0, 1, 1, 0, 0, 0, 1, 0))  # columns P, rows S, slices L
    origin = np.array(image.GetOrigin())
    out.SetOrigin(tuple(origin + np.array([150.0, 0.0, -40.0])))
    return out


def _spacing(image: sitk.Image, spacing) -> sitk.Image:
    out = sitk.Image(image)
    out.SetSpacing(spacing)
    return out


@pytest.mark.parametrize("name, file, edit, why", [
    ("inf-adc", "adc.nrrd", lambda im: _with_array(im, lambda a: a.__setitem__((slice(0, 2), 0, 0), np.inf)),
     "2 voxels that are not a finite number"),
    ("far-adc", "adc.nrrd", lambda im: _shifted(im, 500.0), "covers 0% of the middle of the T2 volume"),
    ("sagittal-adc", "adc.nrrd", _sagittal_beside, "covers 0% of the middle of the T2 volume"),
    ("zero-adc", "adc.nrrd", lambda im: im * 0, "the ADC image is empty or constant (every voxel equals 0)"),
    ("flat-t2", "t2.nrrd", lambda im: im * 0 + 7, "the T2 image is empty or constant (every voxel equals 7)"),
    ("tiny-spacing-t2", "t2.nrrd", lambda im: _spacing(im, (0.001, 0.001, 0.001)), "voxel spacing of 0.001x0.001x0.001 mm"),
    ("huge-spacing-t2", "t2.nrrd", lambda im: _spacing(im, (50.0, 50.0, 300.0)), "voxel spacing of 50x50x300 mm"),
    ("one-voxel-t2", "t2.nrrd", lambda im: im[:1, :1, :1], "has 1x1x1 voxels"),
    ("nan-dwi", "dwi-b800.nrrd", lambda im: _with_array(im, lambda a: a.fill(np.nan)), "not a finite number"),
    ("nan-ktrans", "ktrans.nrrd", lambda im: _with_array(im, lambda a: a.__setitem__((3, 3, 3), -np.inf)),
     "Ktrans map has 1 voxel"),
])
def test_bad_study_images_name_the_file_and_the_problem(phantom, tmp_path, capsys, name, file, edit, why):
    case = _variant(phantom, tmp_path, name, edit, file)
    _refused(capsys, ["preprocess", case, "--out", tmp_path / "o" / "out"], case / file, why, out=tmp_path / "o" / "out")


def test_a_lone_t2_file_and_the_cascade_grid_are_bounded_before_allocating(tmp_path, capsys):
    """A 50x50x300 mm spacing T2 is refused at the boundary; a plausible but 600 mm wide,
    100-slice T2 would need a 23-million-voxel cascade grid, refused before it is allocated."""
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.random((24, 128, 128), dtype=np.float32))
    image.SetSpacing((50.0, 50.0, 300.0))
    sitk.WriteImage(image, str(tmp_path / "huge.nrrd"))
    _refused(capsys, ["zones", tmp_path / "huge.nrrd", "--backend", "cascade", "--out", tmp_path / "o1" / "out"],
             tmp_path / "huge.nrrd", "voxel spacing of 50x50x300 mm", out=tmp_path / "o1" / "out")
    wide = sitk.GetImageFromArray(rng.random((100, 150, 150), dtype=np.float32))
    wide.SetSpacing((4.0, 4.0, 4.0))
    sitk.WriteImage(wide, str(tmp_path / "wide.nrrd"))
    _refused(capsys, ["zones", tmp_path / "wide.nrrd", "--backend", "cascade", "--out", tmp_path / "o2" / "out"],
             "480x480x100 voxels", "more than the 16777216 allowed", out=tmp_path / "o2" / "out")


def test_command_line_numbers(phantom, tmp_path, capsys):
    out = tmp_path / "o" / "out"
    _refused(capsys, ["phantoms", "--seed", "-1", "--out", out], "--seed", "-1", out=out)
    _refused(capsys, ["phantoms", "--size", "100000", "--out", out], "--size", "100000", out=out)
    _refused(capsys, ["phantoms", "--deformation-mm", "nan", "--out", out], "--deformation-mm", "nan", out=out)
    _refused(capsys, ["preprocess", phantom, "--center", "nan,0,0", "--out", out], "--center", "nan,0,0", out=out)
    _refused(capsys, ["preprocess", phantom, "--center", "1000,1000,1000", "--out", out],
             "--center", "outside the T2 image", out=out)
    _refused(capsys, ["register", phantom, "--starts", "0", "--out", out], "--starts", out=out)
    _refused(capsys, ["grow", phantom, "--seeds", phantom / "ground-truth.json", "--max-volume-cc", "inf",
                      "--out", out], "--max-volume-cc", out=out)
    for ggg in ("nan", "inf"):
        seeds = tmp_path / f"seeds-{ggg}.csv"
        seeds.write_text(f"x,y,z,ggg\n0,0,0,{ggg}\n")
        _refused(capsys, ["grow", phantom, "--seeds", seeds, "--out", out], seeds, "ggg", out=out)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("x,y,z,ggg\n0,0,0,2 # é\n".encode("latin-1"))
    _refused(capsys, ["grow", phantom, "--seeds", latin, "--out", out], latin, "not UTF-8", out=out)


def _detections(tmp_path: Path, name: str, detection: dict | None = None, raw: bytes | None = None, **case) -> Path:
    path = tmp_path / f"{name}.json"
    entry = {"case_id": "A", "detections": [dict({"id": 1, "ggg": 2, "score": 0.5, "center_lps": [0, 0, 0]},
                                                 **(detection or {}))]}
    entry.update(case)
    if raw is None:
        raw = json.dumps({"format": "prostate-cad-detections/1", "cases": [entry]}).encode()
    path.write_bytes(raw)
    return path


def test_malformed_detections_and_masks(phantom, tmp_path, capsys):
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"format": "prostate-cad-ground-truth/1", "cases": [
        {"case_id": "A", "lesion_mask": str(phantom / "t2.nrrd"),
         "lesions": [{"id": 1, "ggg": 2, "center_lps": [0, 0, 0], "label": 1}]}]}))
    good = _detections(tmp_path, "good")
    out = tmp_path / "o" / "out"
    bad = {
        "id-text": ({"id": "abc"}, "'id' must be a whole number"),
        "id-null": ({"id": None}, "'id' must be a whole number"),
        "ggg-nan": ({"ggg": float("nan")}, "'ggg' must be an integer GGG class"),
        "scores-text": ({"class_scores": {"0": "high"}}, "'class_scores' must map"),
    }
    for name, (detection, why) in bad.items():
        path = _detections(tmp_path, name, detection)
        _refused(capsys, ["evaluate", "--detections", path, "--ground-truth", truth, "--out", out], path, why, out=out)
    five = _detections(tmp_path, "five", None, detections=5)
    _refused(capsys, ["evaluate", "--detections", five, "--ground-truth", truth, "--out", out], five, "must be a list",
             out=out)
    latin = _detections(tmp_path, "latin", raw='{"format": "détections"}'.encode("latin-1"))
    _refused(capsys, ["evaluate", "--detections", latin, "--ground-truth", truth, "--out", out], latin, "not UTF-8",
             out=out)
    # a folder is read as a folder of detect runs: one without any detections.json is refused
    runs = tmp_path / "no-runs"
    runs.mkdir()
    _refused(capsys, ["evaluate", "--detections", runs, "--ground-truth", truth, "--out", out], runs,
             "no detections.json", out=out)
    # A T2 given as the lesion mask: labels must be whole numbers 0..255.
    _refused(capsys, ["evaluate", "--detections", good, "--ground-truth", truth, "--out", out, "--bootstrap", "0"],
             phantom / "t2.nrrd", "whole-number labels 0..255", out=out)


def test_zone_labels_are_named_unwrapped_with_their_file(phantom, tmp_path, capsys):
    zones = sitk.ReadImage(str(phantom / "zones.nrrd"), sitk.sitkFloat32)
    bad = _with_array(zones, lambda a: (a.__setitem__((0, 0, 0), 300), a.__setitem__((0, 0, 1), 7)))
    sitk.WriteImage(sitk.Cast(bad, sitk.sitkUInt16), str(tmp_path / "zones-300.nrrd"))
    message = _refused(capsys, ["register", phantom, "--zones", tmp_path / "zones-300.nrrd", "--out",
                                tmp_path / "o" / "out"], tmp_path / "zones-300.nrrd", "labels 0..2", "7, 300",
                       out=tmp_path / "o" / "out")
    assert "44" not in message
    _refused(capsys, ["preprocess", phantom, "--zones", tmp_path / "zones-300.nrrd", "--out", tmp_path / "o" / "out"],
             tmp_path / "zones-300.nrrd", "7, 300", out=tmp_path / "o" / "out")
    _refused(capsys, ["detect", phantom, "--model", "demo-retina-unet-phantoms", "--no-register", "--zones",
                      tmp_path / "zones-300.nrrd", "--out", tmp_path / "o" / "out"],
             tmp_path / "zones-300.nrrd", "7, 300", out=tmp_path / "o" / "out")
    case = _variant(phantom, tmp_path, "zones-in-case")
    shutil.copy(tmp_path / "zones-300.nrrd", case / "zones.nrrd")
    _refused(capsys, ["load", case], case / "zones.nrrd", "7, 300")


def test_a_truncated_dicom_file_is_named_not_reported_as_a_missing_slice(tmp_path, capsys):
    out = tmp_path / "dicom"
    assert cli.main(["phantoms", "--n", "1", "--seed", "3", "--size", "64", "--slices", "12", "--no-dce",
                     "--no-ktrans", "--format", "dicom", "--out", str(out)]) == 0
    victim = sorted(p for p in out.rglob("*") if p.is_file() and p.read_bytes()[128:132] == b"DICM")[5]
    victim.write_bytes(victim.read_bytes()[:200])
    case = next(p for p in out.iterdir() if p.is_dir())
    message = _refused(capsys, ["load", case], victim, "not a readable DICOM file")
    assert "missing slice" not in message


def test_write_errors_are_one_sentence_naming_the_path(phantom, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    _refused(capsys, ["load", phantom, "--export", blocker / "export"], blocker)


def test_overlapping_seeds_are_flagged_with_their_own_volume(phantom, tmp_path, capsys):
    seeds = tmp_path / "seeds.csv"
    truth = json.loads((phantom / "ground-truth.json").read_text())
    x, y, z = truth["cases"][0]["lesions"][0]["center_lps"]
    seeds.write_text(f"x,y,z,ggg,id\n{x},{y},{z},2,1\n{x},{y},{z},3,2\n")
    assert cli.main(["grow", str(phantom), "--seeds", str(seeds), "--out", str(tmp_path / "grown")]) == 0
    lesions = json.loads((tmp_path / "grown" / "grow.json").read_text())["lesions"]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "grown" / "lesions.nrrd")))
    assert lesions[0]["volume_cc"] > 0 and (labels == 1).any()
    assert lesions[1]["flags"][-1] == "no_voxels_of_its_own" and lesions[1]["volume_cc"] == 0
    assert not (labels == 2).any()
