"""The one detection pipeline (`pipeline.run_pipeline` / `Pipeline`) with both bundled demo
detectors on a small phantom: `prostate-cad detect` goes through it for both kinds, a given
transform is applied in pre-processing and replaces registration, given zones replace
segmentation, and the outputs are complete, consistent and staged. The slow stages (TAPS
zones, multi-start registration) are replaced by stubs where only their wiring is tested."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateLesionCADLib import cli
from ProstateLesionCADLib import pipeline as pipeline_module
from ProstateLesionCADLib.demo.detector_model import DEMO_NAME, demo_phantom
from ProstateLesionCADLib.detection.outputs import DETECTIONS_FILE, PROBABILITY_FILE
from ProstateLesionCADLib.errors import ModelError, ParameterError
from ProstateLesionCADLib.formats import read_detections
from ProstateLesionCADLib.models.package import find_model
from ProstateLesionCADLib.phantoms.generate import write_phantom
from ProstateLesionCADLib.pipeline import DETECTORS, STAGES, Pipeline, check_options, detector_package
from ProstateLesionCADLib.preprocessing.preprocess import Preprocessed, preprocess
from ProstateLesionCADLib.registration.register import read_transform, write_transform
from ProstateLesionCADLib.study.loading import load_case

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FOCALNET = "focalnet-demo"
MODELS = (DEMO_NAME, FOCALNET)


def _translation() -> sitk.Transform:
    return sitk.TranslationTransform(3, (2.5, -1.5, 0.0))  # T2 point -> ADC/DWI point, mm


def _forbid(monkeypatch, what: str) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"{what} must not run")
    target = {"registration": "ProstateLesionCADLib.registration.register.register_case",
              "segmentation": "ProstateLesionCADLib.zones.segment.segment_zones"}[what]
    monkeypatch.setattr(target, refuse)


@pytest.fixture(scope="module")
def phantom():
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    return demo_phantom(9003, case_id="Pipeline-9003", ggg=[3])


@pytest.fixture(scope="module")
def case_dir(phantom, tmp_path_factory):
    """The phantom as a case folder whose case.json has no masks, a zones file beside it and a transform file."""
    folder = write_phantom(phantom, tmp_path_factory.mktemp("case") / phantom.case.case_id)
    meta = json.loads((folder / "case.json").read_text())
    for key in ("prostate", "zones"):
        meta.pop(key)
    (folder / "case.json").write_text(json.dumps(meta))
    write_transform(_translation(), folder / "transform.h5")
    return folder


@pytest.fixture(scope="module")
def detect_runs(case_dir, tmp_path_factory):
    """`prostate-cad detect --zones FILE --transform FILE` with each demo model; every call of
    run_pipeline is recorded. Registration and zone segmentation would fail the run."""
    calls = {}
    original = pipeline_module.run_pipeline

    def spy(case, pkg, out_dir, **kwargs):
        result = original(case, pkg, out_dir, **kwargs)
        calls[pkg.name] = (kwargs, result)
        return result

    out_root = tmp_path_factory.mktemp("detect")
    texts = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline_module, "run_pipeline", spy)
        _forbid(mp, "registration")
        _forbid(mp, "segmentation")
        for model in MODELS:
            import contextlib
            import io

            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):  # results and notes
                code = cli.main(["detect", str(case_dir), "--model", model, "--out", str(out_root / model),
                                 "--zones", str(case_dir / "zones.nrrd"), "--transform",
                                 str(case_dir / "transform.h5"), "--device", "cpu"])
            assert code == 0
            texts[model] = buffer.getvalue()
    return calls, out_root, texts


def test_detect_runs_both_detector_kinds_through_run_pipeline(detect_runs):
    calls, out_root, texts = detect_runs
    assert sorted(calls) == sorted(MODELS) and set(DETECTORS) == {"detector", "focalnet"}
    kinds = {model: type(result.preprocessed) for model, (_, result) in calls.items()}
    assert kinds[DEMO_NAME] is Preprocessed and kinds[FOCALNET].__name__ == "SliceStack"
    for model, (kwargs, result) in calls.items():
        pkg = find_model(model)
        assert result.stages_run == list(STAGES) and set(result.timings) == set(STAGES)
        assert result.out_dir == out_root / model
        last = texts[model].strip().splitlines()[-1]
        assert last == f"{len(result.detections.detections)} detections ({pkg.name} {pkg.version}) written to {out_root / model}"
        assert not list(out_root.glob(f".{model}.partial-*"))


def test_outputs_are_complete_and_consistent(detect_runs, phantom):
    calls, out_root, _ = detect_runs
    t2 = phantom.case.t2
    for model, (_, result) in calls.items():
        out = out_root / model
        assert sorted(p.name for p in out.iterdir()) == sorted([DETECTIONS_FILE, PROBABILITY_FILE])
        dset = read_detections(out / DETECTIONS_FILE)
        pkg = find_model(model)
        assert dset.model["name"] == pkg.name and dset.model["version"] == pkg.version
        assert dset.model["intended_use"] == pkg.card["intended_use"]
        (case,) = dset.cases
        assert case.case_id == phantom.case.case_id and case.probability_map == out / PROBABILITY_FILE
        assert result.detections.probability_map == out / PROBABILITY_FILE
        assert [(d.ggg, round(d.score, 6)) for d in case.detections] == \
               [(d.ggg, round(d.score, 6)) for d in result.detections.detections]
        assert case.detections, f"{model} found nothing on a phantom with a GGG3 lesion"
        prob = sitk.ReadImage(str(case.probability_map))
        assert prob.GetSize() == t2.GetSize() and np.allclose(prob.GetOrigin(), t2.GetOrigin())
        assert np.allclose(prob.GetDirection(), t2.GetDirection())
        values = sitk.GetArrayFromImage(prob)
        assert np.array_equal(values, sitk.GetArrayFromImage(result.probability))
        # the map on T2 is the detector's own map interpolated: no value above the detector's highest
        own = result.detector_output.probability
        assert 0.0 <= values.min() and 0.0 < values.max() <= sitk.GetArrayViewFromImage(own).max() + 1e-6 <= 1.0 + 1e-6
    # a FocalNet detection is a local maximum of its map: its score is the map's value there
    focal = calls[FOCALNET][1]
    best = focal.detections.detections[0]
    own = focal.detector_output.probability
    assert own.GetPixel(own.TransformPhysicalPointToIndex(best.center_lps)) == pytest.approx(best.score, abs=1e-6)


def test_given_transform_is_applied_once_in_preprocessing_and_replaces_registration(detect_runs, case_dir):
    calls, _, texts = detect_runs
    case = load_case(case_dir)
    zones = sitk.ReadImage(str(case_dir / "zones.nrrd"))
    given = read_transform(case_dir / "transform.h5", case.t2)
    for model, (kwargs, result) in calls.items():
        assert kwargs["register_preset"] == "paper"  # the default: skipped because a transform is given
        assert result.registration is None and result.transform is kwargs["transform"]
        assert np.allclose(result.transform.GetParameters(), given.GetParameters())
        assert "registered" not in texts[model]
    # Retina U-Net: the ADC/DWI channels are the original images resampled once through the transform
    prep = calls[DEMO_NAME][1].preprocessed
    once = preprocess(case, None, zones, dwi_adc_transform=given)
    unregistered = preprocess(case, None, zones)
    for name in ("ADC", "DWI_HIGH"):
        assert np.array_equal(prep.channel(name), once.channel(name))
        assert not np.allclose(prep.channel(name), unregistered.channel(name))
    assert np.array_equal(prep.channel("T2"), unregistered.channel("T2"))
    # FocalNet: its ADC slices likewise
    from ProstateLesionCADLib.detection.focalnet.inference import FocalNetModel

    stack = calls[FOCALNET][1].preprocessed
    focal = FocalNetModel.from_package(calls[FOCALNET][1].model)
    assert np.array_equal(stack.adc, focal.prepare(case, zones > 0, given).adc)
    assert not np.allclose(stack.adc, focal.prepare(case, zones > 0).adc)


def test_given_zones_are_used(detect_runs, case_dir):
    calls, _, _ = detect_runs
    given = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "zones.nrrd")))
    assert load_case(case_dir).zones is None  # the case itself has none: only --zones can provide them
    for _, result in calls.values():
        assert result.zones_result is None and np.array_equal(sitk.GetArrayFromImage(result.zones), given)
    prep = calls[DEMO_NAME][1].preprocessed
    assert prep.sources["CG"] == "zones mask label 1" and prep.geometry.center_source == "zones mask"
    assert prep.channel("CG").any() and prep.channel("PZ").any()
    # FocalNet takes no zones: the gland (every zone) becomes its prostate mask
    focal = calls[FOCALNET][1]
    assert np.array_equal(sitk.GetArrayFromImage(focal.prostate), (given > 0).astype(np.uint8))
    assert focal.preprocessed.prostate.any()


def test_missing_zones_are_segmented_for_retina_unet_only(phantom, monkeypatch):
    from ProstateLesionCADLib.zones.segment import ZonesResult

    seen = []

    def fake_segment(t2, backend="taps", case_id="", progress=None, **kwargs):
        seen.append((backend, case_id))
        return ZonesResult(phantom.case.zones, {"qc": {"flags": ["small gland"]}, "warnings": ["demo split"]})

    monkeypatch.setattr("ProstateLesionCADLib.zones.segment.segment_zones", fake_segment)
    bare = load_case_without_masks(phantom)
    run = Pipeline(bare, find_model(DEMO_NAME), register_preset=None, zones_backend="cascade").segment_zones()
    assert seen == [("cascade", bare.case_id)]
    assert run.messages == ["zones: small gland", "zones: demo split", "zones segmented automatically"]
    assert run.zones is phantom.case.zones and run.zones_result is not None
    assert np.array_equal(sitk.GetArrayFromImage(run.prostate), sitk.GetArrayFromImage(phantom.case.zones) > 0)
    focal = Pipeline(bare, find_model(FOCALNET)).segment_zones()
    assert len(seen) == 1 and focal.zones is None and focal.prostate is None and focal.messages == []


def load_case_without_masks(phantom):
    import dataclasses
    return dataclasses.replace(phantom.case, zones=None, prostate=None)


def test_registration_runs_only_without_a_transform(phantom, monkeypatch):
    calls = []
    transform = _translation()

    def fake_register(case, preset="paper", starts=None, **kwargs):
        calls.append((case, preset, starts))
        return SimpleNamespace(transform=transform)

    monkeypatch.setattr("ProstateLesionCADLib.registration.register.register_case", fake_register)
    pkg = find_model(DEMO_NAME)
    given_zones = sitk.Cast(phantom.case.zones, sitk.sitkUInt8)
    run = Pipeline(load_case_without_masks(phantom), pkg, zones=given_zones, register_preset="fast",
                   registration_starts=3).register()
    ((scored_in, preset, starts),) = calls
    assert (preset, starts) == ("fast", 3) and scored_in.zones is given_zones  # scored in the zones just used
    assert run.transform is transform and run.registration.transform is transform
    assert run.messages == ["ADC/DWI registered to T2 automatically"]
    assert Pipeline(phantom.case, pkg, register_preset=None).register().transform is None
    assert Pipeline(phantom.case, find_model(FOCALNET)).register().transform is None  # FocalNet never registers
    assert len(calls) == 1


def test_stages_run_in_order_and_outputs_are_staged(phantom, tmp_path, monkeypatch):
    run = Pipeline(phantom.case, find_model(FOCALNET), device="cpu")
    run.detect()
    assert run.result.stages_run == ["zones", "registration", "preprocessing", "detection"]
    assert run.result.zones is phantom.case.zones and run.result.prostate is phantom.case.prostate

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("ProstateLesionCADLib.detection.outputs.write_detections", broken)
    with pytest.raises(OSError, match="disk full"):
        run.write(tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
    assert "outputs" not in run.result.stages_run


def test_bad_options_are_refused_before_any_work(tmp_path, capsys):
    retina = find_model(DEMO_NAME)
    with pytest.raises(ParameterError, match="T2"):
        check_options(retina, drop=["T2"])
    with pytest.raises(ParameterError, match="preset"):
        check_options(retina, register_preset="slow")
    with pytest.raises(ParameterError, match="backend"):
        check_options(retina, zones_backend="atlas")
    assert check_options(find_model(FOCALNET)).task == "focalnet"
    with pytest.raises(ModelError, match="is a 'zones' model, not a detector"):
        detector_package("zones-demo-cascade")
    assert cli.main(["detect", str(tmp_path), "--model", "zones-demo-cascade", "--out", str(tmp_path / "o")]) == 2
    assert "is a 'zones' model, not a detector" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_zones_segmented_by_detect_get_its_pz_post_processing(phantom, case_dir, tmp_path, monkeypatch, capsys):
    """`detect --pz-shell-mm / --pz-anterior-band` reach the zones it segments itself (the Slicer panel
    passes them when the scene has no zones); a bad value stops it before any work."""
    from ProstateLesionCADLib.zones import ANTERIOR_BAND, PZ_SHELL_MM
    from ProstateLesionCADLib.zones.segment import ZonesResult

    seen = []

    def fake_segment(t2, backend="taps", case_id="", progress=None, **kwargs):
        seen.append(kwargs)
        return ZonesResult(phantom.case.zones, {"qc": {"flags": []}, "warnings": []})

    monkeypatch.setattr("ProstateLesionCADLib.zones.segment.segment_zones", fake_segment)
    bare, pkg = load_case_without_masks(phantom), find_model(DEMO_NAME)
    Pipeline(bare, pkg, register_preset=None).segment_zones()
    Pipeline(bare, pkg, register_preset=None, pz_shell_mm=None, pz_anterior_band=0.3).segment_zones()
    Pipeline(bare, pkg, register_preset=None, pz_shell_mm=11.0, pz_anterior_band=0.5).segment_zones()
    assert seen == [{"pz_shell_mm": PZ_SHELL_MM, "pz_anterior_band": ANTERIOR_BAND},
                    {"pz_shell_mm": None, "pz_anterior_band": 0.3}, {"pz_shell_mm": 11.0, "pz_anterior_band": 0.5}]
    with pytest.raises(ParameterError, match="PZ shell"):
        Pipeline(bare, pkg, register_preset=None, pz_shell_mm=12.0, pz_anterior_band=-1.0)
    # the command line: its values handed to the pipeline, parsed as `zones` parses them
    calls = []

    class Stop(Exception):
        pass

    def spy(case, package, out_dir, **kwargs):
        calls.append(kwargs)
        raise Stop

    monkeypatch.setattr(pipeline_module, "run_pipeline", spy)
    base = ["detect", str(case_dir), "--model", DEMO_NAME, "--no-register"]
    for extra, expected in (([], (PZ_SHELL_MM, ANTERIOR_BAND)), (["--pz-shell-mm", "off"], (None, ANTERIOR_BAND)),
                            (["--pz-shell-mm", "9", "--pz-anterior-band", "0.4"], (9.0, 0.4))):
        with pytest.raises(Stop):
            cli.main([*base, "--out", str(tmp_path / "run"), *extra])
        assert (calls[-1]["pz_shell_mm"], calls[-1]["pz_anterior_band"]) == expected
    for bad, words in ((["--pz-shell-mm", "thick"], "--pz-shell-mm"), (["--pz-anterior-band", "-1"], "anterior band")):
        assert cli.main([*base, "--out", str(tmp_path / "bad"), *bad]) == 2
        assert words in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert len(calls) == 3
