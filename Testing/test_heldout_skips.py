"""Held-out phantom sets leave out the seeds whose lesions cannot be drawn (as demo training
does, with the same `drawable_demo_phantom`) and say how many they left out: `make accuracy
ACCURACY_ARGS="--first-seed 123000"` used to stop at seed 123035."""

from __future__ import annotations

import json

import pytest

from ProstateLesionCADLib.commands.accuracy import main as accuracy_main
from ProstateLesionCADLib.demo.accuracy import heldout_grades, heldout_phantoms
from ProstateLesionCADLib.demo.detector_model import demo_phantom
from ProstateLesionCADLib.errors import ParameterError

UNDRAWABLE = 123058  # with the held-out sets' 15 mm between lesion centres its second lesion does not fit


def test_undrawable_seed_really_cannot_be_drawn():
    with pytest.raises(ParameterError, match="does not fit inside the imaged part"):
        demo_phantom(UNDRAWABLE, ggg=heldout_grades(2)[1], min_lesion_distance_mm=15.0)


def test_heldout_set_skips_and_lists_undrawable_seeds():
    phantoms, skipped = heldout_phantoms(2, first_seed=UNDRAWABLE - 1)
    assert skipped == [UNDRAWABLE]
    assert [p.case.case_id for p in phantoms] == [f"HeldOut-{UNDRAWABLE - 1}"]
    assert [l.ggg for l in phantoms[0].ground_truth.lesions] == heldout_grades(1)[0]


def test_accuracy_reports_skipped_phantoms(tmp_path, capsys):
    assert accuracy_main(["--out", str(tmp_path), "--phantoms", "2", "--bootstrap", "0",
                          "--first-seed", str(UNDRAWABLE - 1)]) == 0
    printed = capsys.readouterr().out
    assert f"1 of 2 held-out phantoms skipped: their lesions do not fit in the gland (seeds {UNDRAWABLE})" in printed
    truth = json.loads((tmp_path / "ground-truth.json").read_text())
    assert [c["case_id"] for c in truth["cases"]] == [f"HeldOut-{UNDRAWABLE - 1}"]


def test_accuracy_with_no_drawable_phantom_is_one_sentence(tmp_path, capsys):
    assert accuracy_main(["--out", str(tmp_path / "out"), "--phantoms", "1", "--first-seed", str(UNDRAWABLE)]) == 2
    err = capsys.readouterr().err
    assert "none of the 1 held-out phantoms from seed 123058 can be drawn" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
