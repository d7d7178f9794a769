"""The zones bench's comparison with the taps package: the one sentence when the package cannot run
here, and the Dice of two masks written as files (what the bench reports)."""

from __future__ import annotations

import importlib.util

import numpy as np
import SimpleITK as sitk

from ProstateLesionCADLib.demo.benchmarks import zones as bench


def test_missing_taps_dependencies_are_named_in_one_sentence(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nibabel" else real(name, *a))
    sentence = bench.taps_package_missing()
    assert sentence.startswith("The taps package's own run is not measured: nibabel not installed")
    assert "pip install -e '.[bench]'" in sentence and "--no-deps lavlab-taps" in sentence
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    assert bench.taps_package_missing() is None


def test_mask_dice_of_two_files(tmp_path):
    a = np.zeros((4, 10, 10), np.uint8)
    b = np.zeros_like(a)
    a[1:3, 2:6, 2:6] = 1  # 32 voxels
    b[1:3, 4:8, 2:6] = 1  # 32 voxels, 16 shared
    for name, arr in (("a.nrrd", a), ("b.nrrd", b)):
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / name))
    assert bench.mask_dice(str(tmp_path / "a.nrrd"), str(tmp_path / "b.nrrd")) == 0.5
    assert bench.mask_dice(str(tmp_path / "a.nrrd"), str(tmp_path / "a.nrrd")) == 1.0
