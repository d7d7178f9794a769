"""Where each scanner vendor keeps a diffusion image's b-value and whether it is a trace image.

b-value, in this order:
- the standard DiffusionBValue (0018,9087): Enhanced MR (inside the MR Diffusion functional
  group), recent software of every vendor;
- Siemens: private (0019,xx0C) of the ``SIEMENS MR HEADER`` block;
- GE: the first value of private (0043,xx39) of the ``GEMS_PARM_01`` block (some software
  versions add 1e9 to it);
- Philips: private (2001,xx03) of the ``Philips Imaging DD 001`` block;
- Siemens again: the sequence name (``*ep_b800t``).

Trace (isotropic) or one gradient direction, from the standard DiffusionDirectionality
(0018,9075), Siemens (0019,xx0D) (the same terms), Philips (2001,xx04) (``I`` = isotropic,
a direction letter otherwise), or a zero/non-zero standard gradient orientation (0018,9089).
"""

from __future__ import annotations

import math
import re
from typing import Optional

import pydicom

ISOTROPIC = "ISOTROPIC"
DIRECTIONAL = "DIRECTIONAL"


def text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1", errors="replace").strip("\x00 ").strip()
    return str(value).strip()


def number(value) -> Optional[float]:
    """A number from a DICOM value that may be numeric, a string, bytes or a list."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
        if value is None:
            return None
    if isinstance(value, bytes):
        value = text(value).split("\\")[0]
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def private(ds, group: int, element_low: int, creator_prefix: str):
    """Value of a private element, checking that its block belongs to `creator_prefix`."""
    low, high = (group << 16) | 0x10, (group << 16) | 0xFF  # the private creator elements of `group`
    for tag in [t for t in ds.keys() if low <= t <= high]:
        if text(ds[tag].value).upper().startswith(creator_prefix.upper()):
            element = ds.get((group, ((tag & 0xFF) << 8) | element_low))
            return element.value if element is not None else None
    return None


_SEQUENCE_B = re.compile(r"ep_b(\d+)t?$", re.IGNORECASE)


def b_value_of(ds) -> Optional[float]:
    """The diffusion b-value (s/mm²) from the standard tag, a vendor tag or the sequence name."""
    element = ds.get((0x0018, 0x9087))
    b = number(element.value) if element is not None else None
    if b is not None:
        return b
    b = number(private(ds, 0x0019, 0x0C, "SIEMENS MR HEADER"))
    if b is not None:
        return b
    ge = number(private(ds, 0x0043, 0x39, "GEMS_PARM_01"))
    if ge is not None:
        return float(ge % 1e9) if ge >= 1e9 else ge  # GE adds 1e9 in some software versions
    b = number(private(ds, 0x2001, 0x03, "PHILIPS IMAGING DD 001"))
    if b is not None:
        return b
    match = _SEQUENCE_B.search(text(ds.get("SequenceName", "")))
    return float(match.group(1)) if match else None


def directionality_of(ds) -> Optional[str]:
    """ISOTROPIC (a trace image), DIRECTIONAL (one gradient direction) or None (not said)."""
    for value in (ds.get((0x0018, 0x9075)), private(ds, 0x0019, 0x0D, "SIEMENS MR HEADER")):
        if value is not None and not isinstance(value, (bytes, str)):
            value = value.value
        term = text(value).upper()
        if term == ISOTROPIC:
            return ISOTROPIC
        if term in (DIRECTIONAL, "BMATRIX"):
            return DIRECTIONAL
    philips = text(private(ds, 0x2001, 0x04, "PHILIPS IMAGING DD 001")).upper()
    if philips == "I":
        return ISOTROPIC
    if len(philips) == 1 and philips.isalpha():
        return DIRECTIONAL
    gradient = ds.get((0x0018, 0x9089))
    if gradient is None and ds.get((0x0018, 0x9076)) is not None and len(ds[0x0018, 0x9076].value):
        gradient = ds[0x0018, 0x9076].value[0].get((0x0018, 0x9089))  # Enhanced MR nests it
    if gradient is not None:
        try:
            vector = [float(v) for v in gradient.value]
        except (TypeError, ValueError):
            return None
        if len(vector) == 3:
            return DIRECTIONAL if any(abs(v) > 1e-6 for v in vector) else ISOTROPIC
    return None
