"""The registration bench's itk-elastix yardstick (benchmark-only extra): on a synthetic pair with a
known translation, oblique direction and non-zero origin, the returned SimpleITK transform maps
fixed points to the moving points (the presets' convention), and it scores higher than the
identity with the bench's criterion. Without the extra: counted as not run (conftest), and the
bench's sentence names the install command."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from ProstateLesionCADLib.demo.benchmarks import _elastix

SHIFT_MM = np.array([3.0, -2.0, 2.5])


def _pair():
    """A textured blob (fixed) and the same content moved by SHIFT_MM (moving)."""
    rng = np.random.default_rng(0)
    arr = ndimage.gaussian_filter(rng.normal(size=(32, 56, 56)), (1.5, 2.5, 2.5))
    z, y, x = np.mgrid[:32, :56, :56]
    arr += 2.0 * (((z - 16) / 8) ** 2 + ((y - 28) / 14) ** 2 + ((x - 28) / 12) ** 2 < 1)
    fixed = sitk.GetImageFromArray(arr.astype(np.float32))
    fixed.SetSpacing((1.2, 1.2, 2.0))
    fixed.SetOrigin((-30.0, 40.0, 10.0))
    c, s = np.cos(0.3), np.sin(0.3)
    fixed.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    # moving(p) = fixed(p - shift): the content sits SHIFT_MM further along; on a grid of its own
    # (coarser, other origin and field of view), as an ADC map beside its T2
    grid = sitk.Image([40, 44, 30], sitk.sitkFloat32)
    grid.SetSpacing((1.6, 1.5, 2.2))
    grid.SetOrigin(tuple(np.add(fixed.GetOrigin(), (-2.0, 3.0, -1.0))))
    grid.SetDirection(fixed.GetDirection())
    moving = sitk.Resample(fixed, grid, sitk.TranslationTransform(3, tuple(-SHIFT_MM)), sitk.sitkLinear, 0.0)
    return fixed, moving


@pytest.mark.slow
@pytest.mark.bench_extra
def test_elastix_bspline_recovers_a_known_translation(tmp_path, monkeypatch):
    from ProstateLesionCADLib.demo.benchmarks.registration import elastix_candidate, gradient_criterion

    monkeypatch.chdir(tmp_path)  # transformix must not leave its deformation field in the working folder
    fixed, moving = _pair()
    blob = sitk.Cast(sitk.GetImageFromArray((sitk.GetArrayFromImage(fixed) > 1.0).astype(np.uint8)), sitk.sitkUInt8)
    blob.CopyInformation(fixed)
    row, note = elastix_candidate(fixed, moving, blob)  # the bench's own candidate row
    assert note is None and row["elastix"]
    assert row["wall_s"] > 0 and row["cpu_s"] > 0 and row["threads"] >= 1 and row["version"]
    assert list(tmp_path.iterdir()) == []
    # points inside the blob, where the images have structure
    for index in [(27.5, 27.5, 15.5), (20, 20, 10), (35, 30, 20), (28, 36, 16)]:
        p = fixed.TransformContinuousIndexToPhysicalPoint(index)
        moved = np.subtract(row["transform"].TransformPoint(p), p)
        assert np.allclose(moved, SHIFT_MM, atol=0.8), (index, moved)
    identity = gradient_criterion(fixed, moving, sitk.Transform(), blob)
    assert row["criterion"] > 0.9 > identity, (row["criterion"], identity)


def test_without_the_extra_the_bench_says_so_in_one_sentence(monkeypatch):
    from ProstateLesionCADLib.demo.benchmarks import registration

    monkeypatch.setattr(_elastix, "elastix_available", lambda: False)
    fixed, moving = _pair()
    row, note = registration.elastix_candidate(fixed, moving, fixed > 1.0)
    assert row is None
    assert note.startswith("itk-elastix is not installed") and "pip install -e '.[bench]'" in note
    assert note.count(". ") == 0 and note.endswith(".")
    # the report carries the sentence where the ratio table would be
    study = {"case": "ProstateX-0000", "rows": [{"candidate": "preset fast", "wall_s": 9.0, "cpu_s": 8.0,
                                                  "criterion": 0.5}], "elastix_note": note}
    assert registration._ratio_text([(study, 100.0, "x.png")], ["fast"]).strip() == note


def test_ratio_table_divides_each_preset_by_elastix():
    from ProstateLesionCADLib.demo.benchmarks import registration

    study = {"case": "ProstateX-0000", "elastix_note": None, "rows": [
        {"candidate": "preset fast", "wall_s": 9.0, "cpu_s": 8.0, "criterion": 0.5},
        {"candidate": "preset paper", "wall_s": 60.0, "cpu_s": 100.0, "criterion": 0.55},
        {"candidate": registration.ELASTIX, "elastix": True, "wall_s": 3.0, "cpu_s": 4.0, "criterion": 0.45}]}
    text = registration._ratio_text([(study, 100.0, "x.png")], ["fast", "paper"])
    lines = [line for line in text.splitlines() if line.startswith("| ProstateX-0000")]
    assert lines[0] == "| ProstateX-0000 | fast | 9.0 / 3.0 | 3.0× | 8.0 / 4.0 | 2.0× | 0.500 / 0.450 |"
    assert lines[1] == "| ProstateX-0000 | paper | 60.0 / 3.0 | 20.0× | 100.0 / 4.0 | 25.0× | 0.550 / 0.450 |"
