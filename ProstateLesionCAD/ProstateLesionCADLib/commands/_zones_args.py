"""The PZ post-processing options shared by `zones` and `detect` (which segments the zones itself
when it is given none): one spelling, one help text, one check.

Not a verb itself (underscore), so cli.VERBS does not name it.
"""

from __future__ import annotations

from typing import Optional

from ..zones import ANTERIOR_BAND, PZ_SHELL_MM


def add_pz_arguments(parser, when: str = "") -> None:
    """--pz-shell-mm MM|off and --pz-anterior-band F (zones.postprocess.posterior_lateral_pz)."""
    parser.add_argument("--pz-shell-mm", default=str(PZ_SHELL_MM), metavar="MM|off",
                        help=f"{when}restrict the peripheral zone to the gland's posterior-lateral shell of this "
                             f"thickness (default {PZ_SHELL_MM:g} mm; 'off' keeps the network's split)")
    parser.add_argument("--pz-anterior-band", type=float, default=ANTERIOR_BAND, metavar="F",
                        help=f"{when}also give the CG the PZ in front of it, anterior to the gland's mid-coronal "
                             "plane, within F times the CG's half-width of its midline (default 0: off; it "
                             "lowers phantom Dice, see README)")


def pz_options(args) -> tuple[Optional[float], float]:
    """(shell in mm or None for 'off', anterior band) from the parsed arguments, checked before any work."""
    from ..zones.postprocess import check_pz_restriction

    shell = shell_mm(args.pz_shell_mm)
    check_pz_restriction(shell, args.pz_anterior_band)
    return shell, args.pz_anterior_band


def shell_mm(value: str) -> Optional[float]:
    """--pz-shell-mm: a positive number of mm, or 'off' (None: the step is skipped)."""
    from ..errors import ParameterError

    if value.strip().lower() == "off":
        return None
    try:
        mm = float(value)
    except ValueError:
        mm = float("nan")
    if not (mm > 0 and mm < float("inf")):
        raise ParameterError(f"--pz-shell-mm must be a positive number of mm or 'off', got {value!r}.")
    return mm
