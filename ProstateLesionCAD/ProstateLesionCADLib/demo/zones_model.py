"""The recipe of the bundled zones demo model (`zones-demo-cascade`): the zonal cascade
trained on synthetic phantoms with `zones.training.train_zones`.

`train_demo_cascade(out)` writes T2 + zone label maps of the phantoms of set
DEMO_TRAIN_SEED and trains with DEMO_RECIPE: small on purpose (3 levels, 8-32 channels,
1.25 mm pixels, 400 steps of 6 slices), weights well under 1 MB; the shipped package
records its training time and validation Dice in model.json. Run it with
`python -m ProstateLesionCADLib.commands.train_demo_zones --out DIR`. `appearance` picks the T2 of
the training phantoms (phantom_plan): the shipped model's default one, the realistic one
(phantoms/t2_appearance.py) or both; README (Zonal segmentation) has what each gave.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

import SimpleITK as sitk

from ..errors import ParameterError
from ..phantoms.generate import APPEARANCES
from ..progress import ProgressCallback, silent, sub_progress
from ..zones import DEMO_MODEL
from ..zones.training import TrainingResult, train_zones

DEMO_TRAIN_SEED = 7001  # phantom-set seed of the shipped demo model; tests hold out other seeds
DEMO_CASES = 24
DEMO_APPEARANCE = "default"  # T2 appearance of the training phantoms: default, realistic or mixed
DEMO_RECIPE = dict(steps=400, batch=6, patch=56, widths=(8, 16, 32), spacing_xy=1.25, val_every=50)
DEMO_INTENDED_USE = ("Demonstration only: trained on synthetic phantoms (the project's own generator), "
                     "never on patient data. Not for diagnosis. On real MRI the central-gland split is "
                     "not validated: review and correct the zones (Segment Editor, then Recompute PZ).")


def phantom_plan(n: int, appearance: str = "default") -> list[tuple[int, str]]:
    """(case index, T2 appearance) of the training phantoms: `n` of one appearance, or for
    "mixed" `n` default ones (indices 0..n-1, the shipped model's) and `n` realistic ones of
    other anatomies (indices n..2n-1), so no anatomy is seen twice."""
    if appearance == "mixed":
        return [(i, "default") for i in range(n)] + [(n + i, "realistic") for i in range(n)]
    if appearance not in APPEARANCES:
        raise ParameterError(f"appearance must be one of {', '.join(APPEARANCES + ('mixed',))}, got {appearance!r}.")
    return [(i, appearance) for i in range(n)]


def write_phantom_pairs(n: int, seed: int, out_dir: str | os.PathLike,
                        progress: Optional[ProgressCallback] = None,
                        appearance: str = "default") -> tuple[list[Path], list[Path]]:
    """T2 + zone label map (NRRD) of the phantoms of set `seed` (ProstateLesionCADLib.phantoms.generate)
    that `phantom_plan(n, appearance)` lists."""
    from ..phantoms.generate import case_seed, make_phantom

    progress = progress or silent
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    plan = phantom_plan(n, appearance)
    for k, (i, look) in enumerate(plan):
        progress(k / len(plan), f"phantom {k + 1}/{len(plan)}")
        ph = make_phantom(case_seed(seed, i), with_dce=False, with_ktrans=False, appearance=look)
        images.append(out / f"phantom-{seed}-{i:03d}-t2.nrrd")
        labels.append(out / f"phantom-{seed}-{i:03d}-zones.nrrd")
        sitk.WriteImage(ph.case.t2, str(images[-1]), True)
        sitk.WriteImage(sitk.Cast(ph.case.zones, sitk.sitkUInt8), str(labels[-1]), True)
    return images, labels


def training_data_text(n_cases: int, seed: int, appearance: str) -> str:
    """model.json's `training_data` for phantom_plan(n_cases, appearance) of set `seed`."""
    source = f"(ProstateLesionCADLib.phantoms.generate, set seed {seed}"
    if appearance == "mixed":
        return (f"{2 * n_cases} synthetic phantoms {source}): case_seed(seed, i) for i < {n_cases} with the default "
                f"T2 appearance, {n_cases} <= i < {2 * n_cases} with the realistic one (phantoms/t2_appearance.py)")
    return f"{n_cases} synthetic phantoms {source}, case_seed(seed, i) for i < {n_cases}, {appearance} T2 appearance)"


def train_demo_cascade(out: str | os.PathLike, n_cases: int = DEMO_CASES, seed: int = DEMO_TRAIN_SEED,
                       progress: Optional[ProgressCallback] = None, appearance: str = DEMO_APPEARANCE,
                       **kw) -> TrainingResult:
    """The shipped demo model: phantoms of set `seed` (phantom_plan(n_cases, appearance)), then
    train_zones with DEMO_RECIPE (entries of `kw` override the recipe's)."""
    kw = {**DEMO_RECIPE, **kw}
    progress = progress or silent
    phantom_plan(n_cases, appearance)  # a bad appearance fails before anything is written
    with tempfile.TemporaryDirectory(prefix="zones-phantoms-") as tmp:
        images, labels = write_phantom_pairs(n_cases, seed, tmp, sub_progress(progress, 0.0, 0.1), appearance)
        return train_zones(images, labels, out, seed=0, name=DEMO_MODEL, version="1.0",
                           intended_use=DEMO_INTENDED_USE,
                           training_data=training_data_text(n_cases, seed, appearance),
                           progress=sub_progress(progress, 0.1, 1.0), **kw)
