"""Typed arguments of the steps the panels run; each produces its `prostate-cad` command line.

One dataclass per step of ProstateLesionCADLib.capabilities. `as_arg_list(step)` gives
the arguments after the command words and passes an optional flag only when the step,
as the library's capabilities table describes it, takes it; `command()` gives the whole
argv for background_process. The panels fill these from their parameter node and
selectors, so no panel writes a flag by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Optional, Sequence

from ProstateLesionCADLib import requirements
from ProstateLesionCADLib.capabilities import Step, panel_steps
from ProstateLesionCADLib.errors import ParameterError
from ProstateLesionCADLib.zones import ANTERIOR_BAND, BACKENDS, DEMO_MODEL, PZ_SHELL_MM

from .background_process import cli_command


def step_availability(capabilities: dict[str, Step], names: Sequence[str],
                      missing: Optional[Callable[[str], Sequence[requirements.Package]]] = None
                      ) -> dict[str, tuple[bool, str]]:
    """Step name -> (offered?, tooltip) for a panel's buttons. A step the capabilities lack is not
    offered, nor one whose Python packages are missing (`missing(step)`, by default
    requirements.missing_packages, which imports nothing): its tooltip names them."""
    lacking = missing or (lambda name: requirements.missing_packages([name]))
    out = {}
    for name in names:
        step = capabilities.get(name)
        packages = lacking(name) if step is not None else []
        out[name] = ((False, f"Not available: this version of the library offers no {name} step.") if step is None
                     else (False, requirements.missing_tooltip(packages)) if packages
                     else (True, f"{step.summary} ({step.command})"))
    return out


def _checked(step: Step, flag: str, value: str, what: str) -> str:
    option = step.option(flag)
    if option is not None and not option.accepts(value):
        raise ParameterError(f"{what} must be one of {', '.join(option.choices)}, got {value!r}.")
    return value


def _pz_arguments(step: Step, shell_mm: Optional[float], anterior_band: float) -> list[str]:
    """--pz-shell-mm / --pz-anterior-band (zones.postprocess.posterior_lateral_pz; shell None = off), each
    passed when the step takes it; a library whose step lacks one refuses a value other than its default."""
    from ProstateLesionCADLib.zones.postprocess import check_pz_restriction

    check_pz_restriction(shell_mm, anterior_band)
    args = []
    for flag, value, default, given in (("--pz-shell-mm", shell_mm, PZ_SHELL_MM, True),
                                        ("--pz-anterior-band", anterior_band, ANTERIOR_BAND, shell_mm is not None)):
        if not given:
            continue  # without the shell step the band is not used
        if step.accepts(flag):
            args += [flag, "off" if value is None else repr(float(value))]
        elif value != default:
            raise ParameterError(f"'{step.command}' of this library has no {flag} option: leave the PZ "
                                 "post-processing at its default.")
    return args


class StepArguments:
    STEP: ClassVar[str] = ""

    def as_arg_list(self, step: Step) -> list[str]:
        raise NotImplementedError

    def command(self, steps: Optional[dict[str, Step]] = None, python: Optional[str] = None) -> list[str]:
        """The argv running this step through Slicer's Python (or `python`)."""
        step = (steps if steps is not None else panel_steps()).get(self.STEP)
        if step is None:
            raise ParameterError(f"This version of the library offers no {self.STEP} step.")
        return cli_command(step.words[0], [*step.words[1:], *self.as_arg_list(step)], python)


@dataclass(frozen=True)
class RegistrationArguments(StepArguments):
    STEP: ClassVar[str] = "registration"
    case_json: Path
    out_dir: Path
    preset: str = "fast"  # interactive use; passed only when `register` has this preset

    def as_arg_list(self, step: Step) -> list[str]:
        args = [str(self.case_json), "--out", str(self.out_dir)]
        if step.accepts("--preset", self.preset):
            args += ["--preset", self.preset]
        return args


@dataclass(frozen=True)
class ZonesArguments(StepArguments):
    STEP: ClassVar[str] = "zones"
    t2_file: Path
    out_dir: Path
    backend: str = BACKENDS[0]
    model: str = DEMO_MODEL
    pz_shell_mm: Optional[float] = PZ_SHELL_MM  # None: the posterior-lateral PZ step is off
    pz_anterior_band: float = ANTERIOR_BAND

    def as_arg_list(self, step: Step) -> list[str]:
        return [str(self.t2_file), "--out", str(self.out_dir),
                "--backend", _checked(step, "--backend", self.backend, "The zones backend"), "--model", self.model,
                *_pz_arguments(step, self.pz_shell_mm, self.pz_anterior_band)]


@dataclass(frozen=True)
class DetectionArguments(StepArguments):
    """`transform_file`: the registration as the user sees it (ITK resampling transform, T2
    point -> ADC/DWI point); the detector then registers nothing itself. Without one,
    `register=False` makes it use ADC/DWI as acquired, `register=True` register them.
    `all_candidates`: FocalNet writes every local maximum (`--all`), not only those at or above
    the package's working point. The PZ post-processing applies to the zones `detect` segments
    itself, so it is passed only without a zones file."""

    STEP: ClassVar[str] = "detection"
    case_json: Path
    model: str
    out_dir: Path
    device: str = "auto"
    zones_file: Optional[Path] = None
    transform_file: Optional[Path] = None
    register: bool = True
    all_candidates: bool = False
    pz_shell_mm: Optional[float] = PZ_SHELL_MM
    pz_anterior_band: float = ANTERIOR_BAND

    def as_arg_list(self, step: Step) -> list[str]:
        args = [str(self.case_json), "--model", self.model, "--out", str(self.out_dir)]
        if step.accepts("--device"):
            args += ["--device", _checked(step, "--device", self.device, "The device")]
        if self.zones_file is not None and step.accepts("--zones"):
            args += ["--zones", str(self.zones_file)]
        if self.transform_file is not None:
            if not step.accepts("--transform"):
                raise ParameterError(f"'{step.command}' of this library cannot take the registration as a file.")
            args += ["--transform", str(self.transform_file)]
        elif not self.register and step.accepts("--no-register"):
            args.append("--no-register")
        if self.all_candidates:
            if not step.accepts("--all"):
                raise ParameterError(f"'{step.command}' of this library cannot write every FocalNet candidate.")
            args.append("--all")
        if self.zones_file is None:
            args += _pz_arguments(step, self.pz_shell_mm, self.pz_anterior_band)
        return args


@dataclass(frozen=True)
class DicomExportArguments(StepArguments):
    """A detection run (and the zones shown) as a DICOM SEG and SR over the study `source` (a DICOM
    folder, or a case file choosing the T2's series among the database's files)."""

    STEP: ClassVar[str] = "dicom-seg"
    source: Path
    detections: Path
    out_dir: Path
    zones_file: Optional[Path] = None

    def as_arg_list(self, step: Step) -> list[str]:
        args = [str(self.source), "--detections", str(self.detections), "--dicom-seg", "--dicom-sr",
                "--out", str(self.out_dir)]
        if self.zones_file is not None:
            args += ["--zones", str(self.zones_file)]
        return args


@dataclass(frozen=True)
class InstallArguments(StepArguments):
    STEP: ClassVar[str] = "install"
    source: str  # package folder, archive, URL or catalogue name
    sha256: str = ""

    def as_arg_list(self, step: Step) -> list[str]:
        return [self.source] + (["--sha256", self.sha256] if self.sha256 else [])
