"""The library's capabilities table (what the panels may run) against the real command line.

Every step's command words and options, with each fixed choice, and every command line the
panels' typed arguments can build are parsed by `prostate-cad`'s own parser: a renamed
verb, a dropped option or a changed choice breaks this test, not the panel in Slicer.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ProstateLesionCAD"))

from ProstateLesionCADLib import cli, device, requirements  # noqa: E402
from ProstateLesionCADLib.capabilities import Option, Step, panel_steps  # noqa: E402
from ProstateLesionCADLib.errors import ParameterError  # noqa: E402
from ProstateLesionCADLib.registration.multistart import PRESETS  # noqa: E402
from ProstateLesionCADLib.zones import BACKENDS, DEMO_MODEL  # noqa: E402
from ProstateLesionCADSlicer.step_arguments import (DetectionArguments, DicomExportArguments,  # noqa: E402
                                                    InstallArguments, RegistrationArguments, ZonesArguments,
                                                    step_availability)

POSITIONAL = {"registration": ["case/case.json"], "zones": ["work/t2.nrrd"], "detection": ["case/case.json"],
              "install": ["package.zip"], "dicom-seg": ["study"]}
REQUIRED = {"registration": ["--out", "out"], "zones": ["--out", "out"],
            "detection": ["--model", "demo", "--out", "out"], "install": [], "dicom-seg": ["--out", "out"]}


def _parse(argv):
    """Parse with the real parser; a SystemExit (unknown verb/option, bad choice) fails the test."""
    try:
        return cli.build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"prostate-cad rejects {' '.join(map(str, argv))} (exit {exc.code})")


def _dest(words, flag: str) -> str:
    """Where the real parser of the command `words` stores `flag` (e.g. detect's --all: all_candidates)."""
    parser = cli.build_parser()
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return next(a.dest for a in parser._actions if flag in a.option_strings)


def test_the_panels_steps_and_their_fixed_choices():
    steps = panel_steps()
    assert list(steps) == ["registration", "zones", "detection", "install", "dicom-seg"]
    assert {name: s.words for name, s in steps.items()} == {
        "registration": ("register",), "zones": ("zones",), "detection": ("detect",), "install": ("models", "install"),
        "dicom-seg": ("export",)}
    export = steps["dicom-seg"]
    assert export.accepts("--dicom-seg") and export.accepts("--dicom-sr") and not export.accepts("--dicom-seg", "x")
    assert export.accepts("--detections", "run/detections.json") and export.accepts("--zones", "zones.nrrd")
    assert not export.accepts("--seg-nrrd") and export.command == "prostate-cad export"
    assert steps["detection"].option("--device").choices == device.CHOICES == ("auto", "cpu", "cuda")
    assert steps["zones"].option("--backend").choices == tuple(BACKENDS)
    assert steps["registration"].option("--preset").choices == tuple(PRESETS) and "fast" in PRESETS
    assert steps["detection"].accepts("--no-register") and not steps["detection"].accepts("--no-register", "x")
    assert steps["detection"].accepts("--device", "cuda") and not steps["detection"].accepts("--device", "gpu")
    assert not steps["registration"].accepts("--device")
    assert steps["install"].command == "prostate-cad models install"


@pytest.mark.parametrize("name", list(panel_steps()))
def test_every_option_and_choice_of_a_step_parses_with_the_real_cli(name):
    step = panel_steps()[name]
    base = [*step.words, *POSITIONAL[name], *REQUIRED[name]]
    assert _parse(base) is not None
    for option in step.options:
        if option.flag in base:
            continue  # required: in every command line above
        numbers = ["0.5"] if option.number else []  # a number option takes a number besides its choices
        for value in [None] if option.switch else (list(option.choices) + numbers or ["some-value"]):
            args = _parse([*base, option.flag] if value is None else [*base, option.flag, value])
            got = getattr(args, _dest(step.words, option.flag))
            if value in numbers:
                assert float(got) == float(value), option.flag
            else:
                assert got == (True if value is None else value), option.flag
        if option.number:  # a word is no number
            assert not option.accepts("thick") and not option.accepts("nan") and option.accepts("12")


def test_every_command_line_the_panels_build_parses(tmp_path):
    """The typed arguments, with every choice they may carry, through the real parser."""
    case, out, t2 = tmp_path / "case" / "case.json", tmp_path / "out", tmp_path / "t2.nrrd"
    for preset in PRESETS:
        args = _parse(RegistrationArguments(case, out, preset).command(python="py")[3:])
        assert (args.path, args.out, args.preset) == (str(case), str(out), preset)
    for backend in BACKENDS:
        args = _parse(ZonesArguments(t2, out, backend).command(python="py")[3:])
        assert (args.path, args.out, args.backend, args.model) == (str(t2), str(out), backend, DEMO_MODEL)
    zones, transform = tmp_path / "case" / "zones.nrrd", tmp_path / "registration.h5"
    for choice, zones_file, transform_file, register in itertools.product(
            device.CHOICES, (None, zones), (None, transform), (True, False)):
        argv = DetectionArguments(case, "demo-model", out, choice, zones_file, transform_file, register).command(
            python="py")
        assert argv[:4] == ["py", "-m", "ProstateLesionCADLib", "detect"]
        args = _parse(argv[3:])
        assert (args.path, args.model, args.out, args.device) == (str(case), "demo-model", str(out), choice)
        assert args.zones == (str(zones_file) if zones_file else None)
        assert args.transform == (str(transform_file) if transform_file else None)
        # a transform file replaces registering; without one, register=False means "as acquired"
        assert args.no_register == (transform_file is None and not register)
    detections = tmp_path / "run" / "detections.json"
    for zones_file in (None, zones):
        args = _parse(DicomExportArguments(case, detections, out, zones_file).command(python="py")[3:])
        assert (args.path, args.detections, args.out) == (str(case), str(detections), str(out))
        assert args.dicom_seg and args.dicom_sr and not args.seg_nrrd and not args.picai
        assert args.zones == (str(zones_file) if zones_file else None)
    args = _parse(InstallArguments("package.zip", "ab" * 32).command(python="py")[3:])
    assert (args.source, args.sha256) == ("package.zip", "ab" * 32)
    assert _parse(InstallArguments("package.zip").command(python="py")[3:]).sha256 is None


def test_pz_post_processing_and_every_candidate_reach_the_command_lines(tmp_path):
    """The panels' PZ post-processing reaches `zones` and, when detect segments the zones itself (no zones
    file), `detect`; "Write every candidate" reaches `detect --all`; the real parser reads them back."""
    from ProstateLesionCADLib.zones import ANTERIOR_BAND, PZ_SHELL_MM

    case, out, t2 = tmp_path / "case" / "case.json", tmp_path / "out", tmp_path / "t2.nrrd"
    zones_file = tmp_path / "case" / "zones.nrrd"
    args = _parse(ZonesArguments(t2, out).command(python="py")[3:])
    assert (float(args.pz_shell_mm), args.pz_anterior_band) == (PZ_SHELL_MM, ANTERIOR_BAND)  # the defaults, spelt out
    argv = ZonesArguments(t2, out, pz_shell_mm=12.5, pz_anterior_band=0.3).command(python="py")
    args = _parse(argv[3:])
    assert (args.pz_shell_mm, args.pz_anterior_band) == ("12.5", 0.3)
    argv = ZonesArguments(t2, out, pz_shell_mm=None, pz_anterior_band=0.3).command(python="py")
    assert _parse(argv[3:]).pz_shell_mm == "off" and "--pz-anterior-band" not in argv  # the band acts in the shell
    argv = DetectionArguments(case, "focalnet-demo", out, all_candidates=True, pz_shell_mm=None).command(python="py")
    args = _parse(argv[3:])
    assert args.all_candidates is True and args.pz_shell_mm == "off" and args.zones is None
    argv = DetectionArguments(case, "m", out, pz_shell_mm=20.0, pz_anterior_band=0.5).command(python="py")
    args = _parse(argv[3:])
    assert (args.pz_shell_mm, args.pz_anterior_band, args.all_candidates) == ("20.0", 0.5, False)
    # given zones are used as they are: no PZ post-processing on the detect command line
    argv = DetectionArguments(case, "m", out, zones_file=zones_file, pz_shell_mm=20.0).command(python="py")
    assert not any(a.startswith("--pz-") for a in argv) and _parse(argv[3:]).zones == str(zones_file)
    for shell, band in ((-2.0, 0.0), (float("inf"), 0.0), (12.0, -0.5)):
        with pytest.raises(ParameterError, match="PZ shell"):
            ZonesArguments(t2, out, pz_shell_mm=shell, pz_anterior_band=band).command()
    # a library whose zones / detect lack these options: defaults are left out, anything else is refused
    bare = {name: Step(s.name, s.words, s.summary, tuple(o for o in s.options
                                                         if not o.flag.startswith("--pz-") and o.flag != "--all"))
            for name, s in panel_steps().items()}
    assert not any(a.startswith("--pz-") for a in ZonesArguments(t2, out).command(bare))
    with pytest.raises(ParameterError, match="no --pz-shell-mm option"):
        ZonesArguments(t2, out, pz_shell_mm=None).command(bare)
    with pytest.raises(ParameterError, match="cannot write every FocalNet candidate"):
        DetectionArguments(case, "m", out, all_candidates=True).command(bare)


def test_typed_arguments_refuse_values_the_library_does_not_take(tmp_path):
    with pytest.raises(ParameterError, match="device must be one of auto, cpu, cuda"):
        DetectionArguments(tmp_path / "c.json", "m", tmp_path, "gpu").command()
    with pytest.raises(ParameterError, match="backend"):
        ZonesArguments(tmp_path / "t2.nrrd", tmp_path, "unet").command()
    without_transform = {"detection": Step("detection", ("detect",), "detect", (Option("--model"), Option("--out")))}
    with pytest.raises(ParameterError, match="cannot take the registration"):
        DetectionArguments(tmp_path / "c.json", "m", tmp_path, transform_file=tmp_path / "t.h5").command(without_transform)
    with pytest.raises(ParameterError, match="offers no zones step"):
        ZonesArguments(tmp_path / "t2.nrrd", tmp_path).command({})
    availability = step_availability(panel_steps(), ("zones", "segmentation"))
    assert availability["zones"] == (True, f"{panel_steps()['zones'].summary} (prostate-cad zones)")
    assert availability["segmentation"][0] is False


def test_the_dicom_export_is_offered_only_once_highdicom_is_installed():
    """Writing DICOM SEG/SR needs highdicom, which Slicer does not bundle: the export is a first-use
    step like the others, disabled with a tooltip naming what to install until it is there."""
    assert [p.name for p in requirements.step_needs(["dicom-seg"])] == ["highdicom"]

    def lacking(version_of):
        return lambda name: requirements.missing_packages([name], version_of, lambda module: True)
    absent = step_availability(panel_steps(), ("dicom-seg",), lacking(lambda name: None))["dicom-seg"]
    assert absent[0] is False and "highdicom" in absent[1] and "Install required packages" in absent[1]
    old = step_availability(panel_steps(), ("dicom-seg",), lacking(lambda name: "0.27.0"))["dicom-seg"]
    assert old[0] is False
    present = step_availability(panel_steps(), ("dicom-seg",), lacking(lambda name: "0.28.2"))["dicom-seg"]
    assert present == (True, f"{panel_steps()['dicom-seg'].summary} (prostate-cad export)")
