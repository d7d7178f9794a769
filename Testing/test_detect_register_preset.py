"""`detect --register-preset` accepts exactly the presets `register --preset` knows
(registration.multistart.PRESETS, one list) and hands the chosen one to the registration."""

from __future__ import annotations

import pytest
import SimpleITK as sitk

from ProstateLesionCADLib import cli
from ProstateLesionCADLib.demo.detector_model import DEMO_NAME, demo_phantom
from ProstateLesionCADLib.errors import CadError
from ProstateLesionCADLib.phantoms.generate import write_phantom
from ProstateLesionCADLib.registration.multistart import PRESETS


class _Stop(CadError):
    """Ends `detect` right after the registration was asked for (its own tests run it for real)."""


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    phantom = demo_phantom(9005, case_id="Preset-9005", ggg=[2])
    return write_phantom(phantom, tmp_path_factory.mktemp("case") / phantom.case.case_id)


def _parsed(*extra):
    return cli.build_parser().parse_args(["detect", "case", "--model", DEMO_NAME, "--out", "o", *extra])


def test_detect_and_register_offer_the_same_presets():
    assert "released" in PRESETS
    assert _parsed().register_preset == "paper"
    for name in PRESETS:
        assert _parsed("--register-preset", name).register_preset == name
        assert cli.build_parser().parse_args(["register", "case", "--out", "o", "--preset", name]).preset == name


@pytest.mark.parametrize("preset", ["released", "fast"])
def test_detect_passes_the_preset_to_the_registration(preset, case_dir, tmp_path, monkeypatch, capsys):
    asked = []

    def record(case, chosen="paper", starts=None, **kwargs):
        asked.append((chosen, starts))
        raise _Stop("registration reached.")

    monkeypatch.setattr("ProstateLesionCADLib.registration.register.register_case", record)
    out = tmp_path / "out"
    code = cli.main(["detect", str(case_dir), "--model", DEMO_NAME, "--out", str(out), "--zones-backend", "cascade",
                     "--register-preset", preset])
    assert code == 2 and "registration reached." in capsys.readouterr().err
    assert asked == [(preset, None)] and not out.exists()


def test_unknown_preset_is_one_sentence_listing_the_presets(case_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["detect", str(case_dir), "--model", DEMO_NAME, "--out", str(out),
                     "--register-preset", "slow"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "Unknown registration preset 'slow'" in err and ", ".join(PRESETS) in err
    assert not out.exists()
