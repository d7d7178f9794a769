"""Numbers from the command line, checked the same way by every verb.

argparse's `type=float` accepts "nan" and "inf" and its `type=int` any size, so a verb
checks each number it reads with `number(value, "--option", low, high)` and each point
with `point(text, "--option")`: a value outside its range is a ParameterError (one sentence,
exit status 2) before any work starts. Not a verb itself (underscore), so cli.VERBS does
not name it.
"""

from __future__ import annotations

import math
from typing import Optional

from ..errors import ParameterError


def number(value, option: str, low: Optional[float] = None, high: Optional[float] = None):
    """`value` unchanged when it is finite and within [low, high]; else ParameterError naming `option`."""
    if value is None:
        return None
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            limits = f" from {_text(low)} to {_text(high)}"
        elif low is not None:
            limits = f" of at least {_text(low)}"
        elif high is not None:
            limits = f" of at most {_text(high)}"
        else:
            limits = ""
        kind = "whole number" if isinstance(value, int) else "finite number"
        raise ParameterError(f"{option} must be a {kind}{limits}, got {value!r}.")
    return value


def _text(limit: float) -> str:
    return str(limit) if isinstance(limit, int) else f"{limit:g}"


def point(text: Optional[str], option: str) -> Optional[tuple[float, float, float]]:
    """'X,Y,Z' (LPS mm) as three finite floats; None stays None."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ParameterError(f"{option} must be three finite numbers X,Y,Z in LPS mm, not {text!r}.")
    return values  # type: ignore[return-value]
