"""ground-truth.json written from a lesion annotation (`prostate-cad grow`, the panel's Export):
`center_lps` is the centre of the lesion mask's bounding box (what the authors' released
matching measures to), `seed_lps` the point the lesion was grown from; files without
`seed_lps` still read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib.errors import FormatError
from ProstateLesionCADLib.formats import read_ground_truth
from ProstateLesionCADLib.lesions.annotation_files import write_annotation
from ProstateLesionCADLib.lesions.growing import Seed
from ProstateLesionCADLib.lesions.seeds import read_seeds

SPACING = np.array([0.5, 0.7, 3.0])
ORIGIN = np.array([-20.0, 10.0, 5.0])
# an oblique frame, as real T2 often is: the centre must go through the direction matrix
ANGLE = np.deg2rad(20.0)
DIRECTION = np.array([[np.cos(ANGLE), -np.sin(ANGLE), 0.0], [np.sin(ANGLE), np.cos(ANGLE), 0.0], [0.0, 0.0, 1.0]])


def _labels() -> sitk.Image:
    arr = np.zeros((8, 30, 40), np.uint16)  # z, y, x
    arr[2:5, 10:21, 4:11] = 1  # x 4..10, y 10..20, z 2..4: box middle index (7, 15, 3)
    arr[4, 12, 3] = 1  # one voxel sticking out: the box grows to x 3..10 -> middle 6.5
    arr[6:8, 0:3, 30:40] = 2  # x 30..39, y 0..2, z 6..7
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(SPACING.tolist())
    img.SetOrigin(ORIGIN.tolist())
    img.SetDirection(DIRECTION.flatten().tolist())
    return img


def _lps(index) -> np.ndarray:
    return ORIGIN + DIRECTION @ (np.asarray(index, float) * SPACING)


def test_box_centre_is_center_and_seed_is_kept(tmp_path):
    seed_a = tuple(_lps((4, 10, 2)))  # a corner voxel of lesion 1, far from its centre
    seed_b = tuple(_lps((35, 1, 6)))
    seeds = [Seed(7, seed_a, 3), Seed(9, seed_b, 1)]
    path = write_annotation(tmp_path / "ann", "Case-1", _labels(), seeds, label_of={7: 1, 9: 2})
    lesions = read_ground_truth(path).cases[0].lesions
    assert [l.label for l in lesions] == [1, 2]
    assert np.allclose(lesions[0].center_lps, _lps((6.5, 15, 3)), atol=1e-3)
    assert np.allclose(lesions[1].center_lps, _lps((34.5, 1, 6.5)), atol=1e-3)
    assert np.allclose(lesions[0].seed_lps, seed_a, atol=1e-3) and np.allclose(lesions[1].seed_lps, seed_b, atol=1e-3)
    assert np.linalg.norm(np.subtract(lesions[0].center_lps, seed_a)) > 4.0
    raw = json.loads(path.read_text())["cases"][0]["lesions"][0]
    assert set(raw) >= {"center_lps", "seed_lps"}
    # growing again from the written file starts from the same points
    assert [s.center_lps for s in read_seeds(path)] == [tuple(l.seed_lps) for l in lesions]


def test_lesion_without_voxels_keeps_its_seed(tmp_path):
    seed = (1.0, 2.0, 3.0)
    path = write_annotation(tmp_path / "ann", "Case-1", _labels(), [Seed(1, seed, 2), Seed(3, seed, 2)])
    lesions = read_ground_truth(path).cases[0].lesions
    assert lesions[1].label == 3 and lesions[1].center_lps == seed == lesions[1].seed_lps


def test_file_without_seed_reads(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"format": "prostate-cad-ground-truth/1", "cases": [
        {"case_id": "A", "lesions": [{"id": 1, "ggg": 2, "center_lps": [1, 2, 3]}]}]}))
    lesion = read_ground_truth(path).cases[0].lesions[0]
    assert lesion.seed_lps is None and lesion.center_lps == (1.0, 2.0, 3.0)
    assert read_seeds(path)[0].center_lps == (1.0, 2.0, 3.0)


def test_bad_seed_is_one_sentence(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"format": "prostate-cad-ground-truth/1", "cases": [
        {"case_id": "A", "lesions": [{"id": 1, "ggg": 2, "center_lps": [1, 2, 3], "seed_lps": [1, 2]}]}]}))
    with pytest.raises(FormatError, match="'seed_lps' must be three"):
        read_ground_truth(path)
