"""The pipeline bench's paper-size package is a detector package the pipeline loads (25 members of
the published topology), its options are checked in one sentence, and a measuring process that
dies is reported in the table instead of stopping the bench."""

from __future__ import annotations

import os

import pytest

from ProstateLesionCADLib.demo.benchmarks._measure import measure
from ProstateLesionCADLib.demo.benchmarks.pipeline import _configurations, write_paper_size_package
from ProstateLesionCADLib.detection.retina_unet.network import EXP0_CONFIG
from ProstateLesionCADLib.errors import ParameterError
from ProstateLesionCADLib.models.package import find_model
from ProstateLesionCADLib.pipeline import load_detector


def test_paper_size_package_loads_as_a_25_member_detector(tmp_path):
    pkg = find_model(str(write_paper_size_package(tmp_path / "pkg")), task="detector")  # sha256 verified
    detector = load_detector(pkg, "cpu")
    assert len(detector.states) == 25
    assert detector.cfg["n_blocks"] == EXP0_CONFIG["n_blocks"] and detector.cfg["patch_size"] == [160, 160, 24]


def test_bench_options_and_a_dying_measurement(monkeypatch):
    monkeypatch.setenv("PROSTATE_CAD_BENCH_PIPELINE_PRESETS", "fast,paper")
    monkeypatch.setenv("PROSTATE_CAD_BENCH_PIPELINE_MODELS", "paper-size")
    assert _configurations() == [("paper-size", "fast"), ("paper-size", "paper")]
    monkeypatch.setenv("PROSTATE_CAD_BENCH_PIPELINE_PRESETS", "quick")
    with pytest.raises(ParameterError, match="PRESETS"):
        _configurations()
    m = measure(os._exit, 3)
    assert m["result"] is None and m["error"] == "the measuring process ended with exit code 3"
