"""The ProstateLesionCAD self-test's walk-through on real MRML classes (slicer-core wheel).

The module's ScriptedLoadableModuleTest runs ProstateLesionCADSlicer.self_test_steps inside
Slicer. Here the same functions run on a vtkMRMLScene with real `prostate-cad` child
processes through the panels' ProcessRunner: the bundled sample, zones, registration with
two starts, detection with the bundled demo model, lesion nodes, the working points, and
annotation (seed, grow, move, re-grow, export). Two differences, for time: the zones step
uses the cascade's gland network here, while the self-test runs the panel's default (the
TAPS network, several times slower on a CPU); and registration runs before zones, as with
zones it scores the gland's two zones separately, which takes several times longer per
start on the sample. What needs Slicer itself — the preset buttons
moving the slider widget, Sample Data's button — is checked only by the self-test.

The failure paths show that a step that fails, is cut off or gives the wrong nodes fails
the self-test instead of being skipped.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ProstateLesionCAD"))

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is a dev dependency")  # noqa: E402

from ProstateLesionCADLib import cli, ggg_palette  # noqa: E402
from ProstateLesionCADLib.formats import read_ground_truth  # noqa: E402
from ProstateLesionCADSlicer import background_process, self_test_steps  # noqa: E402
from ProstateLesionCADSlicer.cad_logic import CadLogic  # noqa: E402
from ProstateLesionCADSlicer.sample_data import load_sample  # noqa: E402
from ProstateLesionCADSlicer.self_test_steps import StepFailed  # noqa: E402

MODULE = REPO / "ProstateLesionCAD" / "ProstateLesionCAD.py"
STEP_TIMEOUT_S = 900


@pytest.mark.slow
def test_walkthrough_on_the_sample_with_real_steps(tmp_path):
    scene = slicer.vtkMRMLScene()
    cad = CadLogic(scene)
    runner = background_process.ProcessRunner()
    created = load_sample(cad)
    assert sorted(created) == ["ADC", "DWI_HIGH", "DWI_LOW", "T2"]

    self_test_steps.run_step(runner, "registration", lambda work: self_test_steps.registration_command(cad, work),
                             cad.load_registration_result, STEP_TIMEOUT_S)
    self_test_steps.check_registration(cad)

    zones = self_test_steps.run_step(
        runner, "zones", lambda work: cad.zonal_logic().zones_command(cad.params.t2, work, "cascade"),
        cad.load_zones_result, STEP_TIMEOUT_S)
    self_test_steps.check_zones(zones)
    assert cad.params.zones is zones

    models = cad.detector_models()
    package = next(p for p in models if p.name == "demo-retina-unet-phantoms")
    cad.params.model = package.name
    seg, table, infos = self_test_steps.run_step(
        runner, "detection", lambda work: cad.step_command("detection", work),
        lambda out: cad.load_detections(out / "detections.json"), STEP_TIMEOUT_S)
    shown = self_test_steps.check_lesion_nodes(cad, seg, table, infos)
    assert all(i.ggg >= cad.params.min_ggg and i.score >= cad.params.score_threshold for i in shown)

    presets = self_test_steps.model_presets(cad, package)
    counts = {}
    for key in ("max_sensitivity", "balanced"):
        cad.apply_filter(threshold=round(presets[key], 2))  # the slider's two decimals
        counts[key] = len(self_test_steps.check_filter(cad, infos, round(presets[key], 2)))
    assert presets["max_sensitivity"] <= presets["balanced"] and counts["max_sensitivity"] >= counts["balanced"]

    path = self_test_steps.annotate_sample(scene, cad.params.t2, tmp_path)
    lesion = read_ground_truth(path).cases[0].lesions[0]
    assert path.parent == tmp_path / "annotation" and lesion.ggg == self_test_steps.sample_lesion()[1]
    assert not runner.running


def test_the_self_tests_registration_command_parses_with_the_real_cli(tmp_path):
    scene = slicer.vtkMRMLScene()
    cad = CadLogic(scene)
    load_sample(cad)
    argv = self_test_steps.registration_command(cad, tmp_path)
    args = cli.build_parser().parse_args(argv[3:])
    assert (args.preset, args.starts) == ("fast", self_test_steps.SELF_TEST_STARTS)
    assert Path(args.path).is_file() and Path(args.out) == tmp_path / "out"


def _command(code: str):
    return lambda work: [sys.executable, "-c", code]


def test_a_failing_or_overrunning_step_fails_the_self_test():
    runner = background_process.ProcessRunner(python_path=[])
    with pytest.raises(StepFailed, match="The zones step failed: no gland found"):
        self_test_steps.run_step(runner, "zones", _command("import sys; print('error: no gland found'); sys.exit(2)"),
                                 lambda out: out, 60)
    with pytest.raises(background_process.StepTimeout):
        self_test_steps.run_step(runner, "detection", _command("import time; time.sleep(60)"), lambda out: out, 1.0)
    assert not runner.running
    loaded = self_test_steps.run_step(runner, "zones", _command("print('ok')"), lambda out: "loaded", 60)
    assert loaded == "loaded"
    assert issubclass(StepFailed, AssertionError)  # unittest counts it as a failure, not an error or a skip


def test_wrong_nodes_fail_the_checks(tmp_path):
    scene = slicer.vtkMRMLScene()
    cad = CadLogic(scene)
    with pytest.raises(StepFailed, match="0 segments"):
        self_test_steps.check_zones(None)
    with pytest.raises(StepFailed, match="no transform node"):
        self_test_steps.check_registration(cad)
    with pytest.raises(StepFailed, match="found no lesion"):
        self_test_steps.check_lesion_nodes(cad, None, None, [])

    class NoWorkingPoints:
        name = "bare"

        @staticmethod
        def thresholds(criterion):
            return None
    with pytest.raises(StepFailed, match=f"no working points for {cad.params.criterion}"):
        self_test_steps.model_presets(cad, NoWorkingPoints())


def test_lesion_nodes_in_the_wrong_colour_fail(tmp_path):
    """A detection's segment recoloured away from its GGG colour is caught."""
    from ProstateLesionCADLib.formats import Detection, DetectionCase, DetectionSet, write_detections

    scene = slicer.vtkMRMLScene()
    cad = CadLogic(scene)
    created = load_sample(cad)
    t2 = created["T2"]
    ras, ggg = self_test_steps.sample_lesion()
    center_lps = (-ras[0], -ras[1], ras[2])
    half = np.array([4.0, 4.0, 4.5])
    box = (tuple(np.array(center_lps) - half), tuple(np.array(center_lps) + half))
    path = tmp_path / "detections.json"
    write_detections(DetectionSet([DetectionCase("ProstateX-0000", [Detection(1, ggg, 0.9, center_lps, box)])]), path)
    seg, table, infos = cad.load_detections(path)
    assert t2 is cad.params.t2
    assert self_test_steps.check_lesion_nodes(cad, seg, table, infos)
    segment = seg.GetSegmentation().GetSegment(infos[0].segment_id)
    segment.SetColor(*ggg_palette.ggg_class(0 if ggg else 1).rgb)
    with pytest.raises(StepFailed, match=f"not in the colour of GGG{ggg}"):
        self_test_steps.check_lesion_nodes(cad, seg, table, infos)


def _calls_in_order(function: ast.FunctionDef) -> list[str]:
    names = []
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            names.append((node.lineno, node.col_offset, name))
    return [n for _, _, n in sorted(names)]


def test_the_module_self_test_walks_every_step_in_order():
    """ProstateLesionCADTest: the sequence of the walk-through, each background step with a time limit."""
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    test = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ProstateLesionCADTest")
    method = next(n for n in test.body if isinstance(n, ast.FunctionDef) and n.name == "test_walkthrough_on_sample")
    calls = _calls_in_order(method)
    sequence = ["require_steps", "require_models", "loadSample", "check_zones", "registration_command",
                "check_registration", "check_lesion_nodes", "model_presets", "click", "check_filter", "annotate_sample"]
    positions = [calls.index(name) for name in sequence]
    assert positions == sorted(positions), calls
    steps = [node for node in ast.walk(method) if isinstance(node, ast.Call)
             and getattr(node.func, "attr", "") == "run_step"]
    assert [s.args[1].value for s in steps] == ["zones", "registration", "detection"]
    assert all(ast.unparse(s.args[-1]) == "STEP_TIMEOUT_S" for s in steps)
    runtest = next(n for n in test.body if isinstance(n, ast.FunctionDef) and n.name == "runTest")
    assert "test_walkthrough_on_sample" in _calls_in_order(runtest)
