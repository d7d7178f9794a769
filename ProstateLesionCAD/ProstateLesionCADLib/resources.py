"""Locate the extension's shared Resources/ folder (sample case, bundled demo models, catalogue).

In a source checkout and in an editable install the folder sits two levels above this
package; in a Slicer extension install it is copied next to the module. The environment
variable PROSTATE_CAD_RESOURCES overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path


def resources_dir() -> Path:
    override = os.environ.get("PROSTATE_CAD_RESOURCES")
    if override:
        return Path(override)
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[1] / "Resources", here.parent / "Resources" / "Shared"):
        if candidate.is_dir():
            return candidate
    return here.parents[1] / "Resources"


def sample_case_dir() -> Path:
    """The embedded ProstateX-0000 sample (compressed NRRD per role + case.json)."""
    return resources_dir() / "Sample" / "ProstateX-0000"


def bundled_models_dir() -> Path:
    return resources_dir() / "Models"


def user_models_dir() -> Path:
    """Per-user cache of installed/downloaded model packages."""
    override = os.environ.get("PROSTATE_CAD_MODELS")
    if override:
        return Path(override)
    base = os.environ.get("XDG_DATA_HOME") or (Path.home() / ".local" / "share")
    return Path(base) / "ProstateLesionCAD" / "models"
