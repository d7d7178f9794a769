"""The lesion growing rules `grow --method` chooses from, and the default one.

"paper" is `growing.grow_lesion` (seed against ring thresholds on T2, high-b DWI and Ktrans,
⌈2n/3⌉ vote); "released" is `released_growing.grow_lesion_released` (the authors' released
code). The default stays "paper": on 12 held-out phantoms it reached a higher Dice with a
smaller volume error (README, "Lesion growing from seed points").
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import SimpleITK as sitk

from ..errors import ParameterError
from .growing import grow_lesion, growing_sequences
from .released_growing import grow_lesion_released, released_sequences

GROW_METHODS = ("paper", "released")
DEFAULT_GROW_METHOD = "paper"


def grow_method(name: str, transform: Optional[sitk.Transform] = None) -> tuple[Callable, Callable]:
    """(sequences(case, transform) -> dict, grow_one for `growing.grow_lesions`) of a rule;
    `transform` (fixed T2 -> moving DWI/ADC) gives the released rule its shifted seed."""
    if name == "paper":
        return growing_sequences, grow_lesion
    if name == "released":
        return released_sequences, functools.partial(grow_lesion_released, transform=transform)
    raise ParameterError(f"lesion growing method {name!r} is not one of {', '.join(GROW_METHODS)}.")
