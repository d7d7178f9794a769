"""What the library offers the Slicer panels: each step a panel runs as a `prostate-cad` process.

A step names the command words it runs (`register`, `models install`, ...) and the
options a panel may pass, with their fixed choices where the command has them. The panels
build their command lines from this table only (ProstateLesionCADSlicer.step_arguments);
Testing/test_capabilities.py parses every command line they can build with the real
parser, so the table and the command line cannot drift apart. Light to import: the panel
reads it when it opens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Option:
    flag: str  # "--device"
    choices: tuple[str, ...] = ()  # the values the command accepts; () = any value (a path, a name)
    switch: bool = False  # a flag without a value ("--no-register")
    number: bool = False  # a finite number is accepted too (besides `choices`, e.g. "--pz-shell-mm 12|off")

    def accepts(self, value: Optional[str] = None) -> bool:
        if self.switch:
            return value is None
        if value is None or value in self.choices:
            return True
        if self.number:
            try:
                return math.isfinite(float(value))
            except ValueError:
                return False
        return not self.choices


@dataclass(frozen=True)
class Step:
    name: str  # the panel's name for it: "registration", "zones", "detection", "install", "dicom-seg"
    words: tuple[str, ...]  # the command after `prostate-cad`: ("register",), ("models", "install")
    summary: str  # one line for the panel's tooltip
    options: tuple[Option, ...] = ()

    @property
    def command(self) -> str:
        return "prostate-cad " + " ".join(self.words)

    def option(self, flag: str) -> Optional[Option]:
        return next((o for o in self.options if o.flag == flag), None)

    def accepts(self, flag: str, value: Optional[str] = None) -> bool:
        """Whether the command takes `flag` (and `value`, when its values are fixed)."""
        option = self.option(flag)
        return option is not None and option.accepts(value)


def panel_steps() -> dict[str, Step]:
    """Step name -> Step, for every step the panels can run with this library."""
    from .device import CHOICES as DEVICES
    from .registration.multistart import PRESETS
    from .zones import BACKENDS

    # the PZ post-processing of `zones`, and of `detect` when it segments the zones itself
    pz_options = (Option("--pz-shell-mm", ("off",), number=True), Option("--pz-anterior-band", number=True))
    steps = (
        Step("registration", ("register",), "Register ADC and DWI to T2 (multi-start, never worse than none).",
             (Option("--out"), Option("--preset", tuple(PRESETS)))),
        Step("zones", ("zones",), "Segment the prostate, central gland and peripheral zone of the T2.",
             (Option("--out"), Option("--backend", tuple(BACKENDS)), Option("--model"), *pz_options)),
        Step("detection", ("detect",), "Detect and grade lesions with the selected model.",
             (Option("--model"), Option("--out"), Option("--device", tuple(DEVICES)), Option("--zones"),
              Option("--transform"), Option("--no-register", switch=True), Option("--all", switch=True),
              *pz_options)),
        Step("install", ("models", "install"), "Install a model package from a file or a URL.",
             (Option("--sha256"),)),
        # the CAD panel's "Export to DICOM database" (writing DICOM needs highdicom, which Slicer lacks)
        Step("dicom-seg", ("export",), "Write the lesions and zones as a DICOM SEG and a DICOM SR measurement "
             "report over the T2's study.",
             (Option("--detections"), Option("--zones"), Option("--out"), Option("--dicom-seg", switch=True),
              Option("--dicom-sr", switch=True))),
    )
    return {step.name: step for step in steps}
